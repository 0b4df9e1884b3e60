"""The text every fixture tokenizer is trained on: a constant, so the vocabularies never change."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

# A few paragraphs of ordinary English (varied words, punctuation, digits). It is
# embedded so that the trained vocabularies never change under us, and it is
# long enough for a 512-token byte-level BPE to fill its whole vocabulary.
CORPUS: Final[str] = """\
The old lighthouse stood at the northern end of the bay for more than 140 years. \
Every evening at 7:45 the keeper climbed its 96 steps, lit the lamp, and wrote the \
weather in a leather notebook: wind from the west, light rain, visibility about \
3 miles. Ships passing the point in 1893 could see the beam from 18 nautical miles away.

Baking bread at home is easier than most people think. Mix 500 grams of flour with \
350 millilitres of warm water, 10 grams of salt and a small spoon of yeast. Knead the \
dough for ten minutes, cover it, and let it rise until it has doubled in size; this \
usually takes one to two hours. Bake at 220 degrees for 35 minutes, then let it cool.

On Monday the city council voted 7 to 2 to repair the bridge over the river. The \
work will cost roughly $4.2 million, and the mayor said it should be finished by \
October. "We cannot wait another winter," she told reporters. Drivers should expect \
delays on Main Street, Second Avenue and the road to the airport.

Why do cats sleep so much? A healthy adult cat sleeps between 12 and 16 hours a day. \
Its ancestors hunted at dawn and dusk, so saving energy during the day made sense. \
Kittens and older cats may sleep even longer, sometimes up to 20 hours!

Alice packed her bag quickly: two shirts, a warm jacket, a map, a notebook, three \
pencils, and a bottle of water. The train left at 06:30, and she did not want to \
miss it again. Her brother, who was still half asleep, asked where she was going. \
"North," she said, "to the mountains, and then wherever the path leads."

A good experiment starts with a simple question and a careful plan. Write down what \
you expect to happen, change only one thing at a time, and measure the result at \
least 3 times. If the numbers disagree, check your tools before you doubt the theory. \
Science is slow, patient work; most of it is checking, counting and writing things down.

The market opens at 8 o'clock on Saturday morning. Farmers bring apples, pears, \
potatoes, onions, fresh eggs, honey and cheese from the valley. Prices are fair: a \
dozen eggs costs $3, and a jar of honey is $7.50. By noon the square is full of \
music, children, dogs and the smell of coffee.

Learning a language takes time. Read a little every day, listen to songs and the \
radio, and do not be afraid of mistakes. After 6 months you will understand simple \
stories; after 2 years you may dream in your new language. Practice, rest, repeat.
"""


def corpus_lines() -> Iterator[str]:
    """Yield the corpus line by line, the granularity the trainers expect."""
    yield from CORPUS.splitlines()
