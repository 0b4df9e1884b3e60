"""What the generating engines (text, vision) do around the model: check a request against the
context (`request_checks`), stop on stop strings (`stops`), constrain output to a grammar
(`constrain`), score tokens (`logprobs`); and, for mlx-lm's chat models, render the prompt
(`chat_prompt`), plan a request (`request_plan`), split the reply into answer, thinking and tool
calls (`reply_split`) and stream a call's arguments as they are written (`call_stream`).
"""
