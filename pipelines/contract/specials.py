"""The special tokens and their fixed ids: the one definition every stage and model uses.

Ids 0-5 are the same in every vocabulary (word, and later subword or character): ``[PAD]`` pads
batches, ``[UNK]`` stands for a token outside the vocabulary, ``[NUM]`` and ``[URL]`` for numbers
and links (normalization puts them in the text), ``<go>`` starts and ``<eos>`` ends a decoded
sequence (added by the models, never in the data).
"""

from __future__ import annotations

PAD, UNK, NUM, URL, GO, EOS = "[PAD]", "[UNK]", "[NUM]", "[URL]", "<go>", "<eos>"
SPECIALS: tuple[str, ...] = (PAD, UNK, NUM, URL, GO, EOS)
PAD_ID, UNK_ID, NUM_ID, URL_ID, GO_ID, EOS_ID = range(len(SPECIALS))
# Specials that normalization puts in the text, and so are counted like words (and are symbols of
# their own in piece models).
COUNTED_SPECIALS: tuple[str, ...] = (NUM, URL)
# Specials that can occur in normalized text: those, and [UNK] where a corpus marks its own unknown
# words (``normalize.unk_token``).
TEXT_SPECIALS: tuple[str, ...] = (UNK, NUM, URL)
# Specials that stand for words of the text (and so may be drawn as word2vec noise, or exported).
PLACEHOLDER_IDS: tuple[int, ...] = (UNK_ID, NUM_ID, URL_ID)
# Specials that are never words: padding and the sequence frame.
STRUCTURAL_IDS: tuple[int, ...] = (PAD_ID, GO_ID, EOS_ID)
