"""The fixtures' special tokens and chat templates (ChatML, Qwen2-VL's, Qwen's tool and thinking ones)."""

from __future__ import annotations

from typing import Final

ENDOFTEXT: Final[str] = "<|endoftext|>"
IM_START: Final[str] = "<|im_start|>"
IM_END: Final[str] = "<|im_end|>"
# Order matters: the trainer assigns ids 0, 1, 2 to these in this order.
CHATML_SPECIAL_TOKENS: Final[tuple[str, ...]] = (ENDOFTEXT, IM_START, IM_END)

# Qwen2-VL's processor expands each <|image_pad|> into one token per merged
# patch, and the model finds the image by these ids (config image_token_id,
# vision_start_token_id, ...), so the tokenizer must know them as specials.
QWEN2_VL_SPECIAL_TOKENS: Final[tuple[str, ...]] = (
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

_TEXT_PARTS_LOOP: Final[str] = (
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}"
)
_MEDIA_PARTS_LOOP: Final[str] = (
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] in ('image', 'image_url') %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% endif %}"
    "{% endfor %}"
)


def _chatml_template(parts_loop: str) -> str:
    """ChatML with string content, OpenAI-style content-part lists or no content.

    Only the handling of content-part lists differs between the text and the
    vision template, so both are generated from this one skeleton.
    """
    return (
        "{% for message in messages %}"
        "<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% elif message['content'] %}" + parts_loop + "{% endif %}"
        "<|im_end|>\n"
        "{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


#: ChatML as Qwen uses it; content parts other than text are dropped.
CHATML_TEMPLATE: Final[str] = _chatml_template(_TEXT_PARTS_LOOP)
#: ChatML where image/video parts become Qwen2-VL's vision placeholder tokens.
QWEN2_VL_CHAT_TEMPLATE: Final[str] = _chatml_template(_MEDIA_PARTS_LOOP)

#: Qwen-style tool and thinking markers; each is one special token in the fixtures that use them.
TOOL_SPECIAL_TOKENS: Final[tuple[str, ...]] = ("<tool_call>", "</tool_call>", "<think>", "</think>")


def _qwen_tool_template(think: bool) -> str:
    """Qwen 2.5/3's tool template, trimmed: tools in the system turn, assistant calls as
    ``<tool_call>{"name": ..., "arguments": ...}</tool_call>``, tool results in a user turn. mlx-lm
    infers its ``json_tools`` parser from ``<tool_call>`` and ``tool_call.name``. With
    ``think=True`` the generation prompt opens a ``<think>`` block unless ``enable_thinking`` is
    false (then it is given closed and empty, as Qwen3 does).
    """
    opening = ("{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n"
               "{% else %}<think>\n{% endif %}") if think else ""
    return (
        "{% if tools %}<|im_start|>system\n"
        "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}\n\n{% endif %}"
        "# Tools\n<tools>{% for tool in tools %}\n{{ tool | tojson }}{% endfor %}\n</tools>\n"
        "Call a function as <tool_call>{\"name\": <name>, \"arguments\": <args>}</tool_call><|im_end|>\n"
        "{% endif %}"
        "{% for message in messages %}"
        "{% if message['role'] == 'system' and tools %}"
        "{% elif message['role'] == 'tool' %}<|im_start|>user\n<tool_response>\n{{ message['content'] }}"
        "\n</tool_response><|im_end|>\n"
        "{% else %}<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}{% endif %}"
        "{% for tool_call in message.get('tool_calls') or [] %}{% set tool_call = tool_call.function %}"
        "<tool_call>\n{\"name\": \"{{ tool_call.name }}\", \"arguments\": {{ tool_call.arguments | tojson }}}"
        "\n</tool_call>{% endfor %}<|im_end|>\n{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n" + opening + "{% endif %}"
    )


QWEN_TOOL_TEMPLATE: Final[str] = _qwen_tool_template(think=False)
QWEN_THINKING_TEMPLATE: Final[str] = _qwen_tool_template(think=True)
#: Refuses a system message, as Gemma's and older Mistral's templates do.
NO_SYSTEM_TEMPLATE: Final[str] = (
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    + CHATML_TEMPLATE
)
