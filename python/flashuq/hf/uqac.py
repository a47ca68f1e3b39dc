"""UQAC's constants (the recency calibration, the instruction marker, the stop set) and
:func:`uqac_is_stop`."""

from __future__ import annotations

import re

import torch
from torch import Tensor

from .._uqac_calibration import UQAC_CALIBRATION  # noqa: F401  (re-exported as flashuq.hf.UQAC_CALIBRATION)


#: UQAC's instruction marker: every instruction position counts as a stop token.
UQAC_INSTR_TOKEN = "<|instr|>"

#: UQAC's stop set (``src/utils/macro.py``: ``STOP_WORDS ∪ STOP_CHARACTERS ∪ {INSTR_TOKEN}``): the
#: empty string (so whitespace-only tokens count), 174 English stop words (contractions with the
#: typographic apostrophe ’, as in the repository), and 24 punctuation characters. A token is a stop
#: token when its decoded text, whitespace removed and lower-cased, is in the set.
UQAC_STOP_WORDS = frozenset(
    """a about above after again against all am an and any are aren’t as at be because been before being below
between both but by cannot can’t could couldn’t did didn’t do does doesn’t doing don’t down during each few
for from further had hadn’t has hasn’t have haven’t having he her here here’s hers herself he’d he’ll he’s him
himself his how how’s i if in into is isn’t it its itself it’s i’d i’ll i’m i’ve let’s me more most mustn’t my
myself no nor not of off on once only or other ought our ours ourselves out over own same shan’t she she’d
she’ll she’s should shouldn’t so some such than that that’s the their theirs them themselves then there
there’s these they they’d they’ll they’re they’ve this those through to too under until up very was wasn’t we
were weren’t we’d we’ll we’re we’ve what what’s when when’s where where’s which while who whom who’s why why’s
with won’t would wouldn’t you your yours yourself yourselves you’d you’ll you’re you’ve""".split()
) | frozenset("!\"'(),.:;?@[\\]_`{}~‘’“”…") | frozenset({"", UQAC_INSTR_TOKEN})


def uqac_is_stop(response_tokens, n_instr: int, *, tokenizer=None, stop_words=None) -> Tensor:
    """UQAC's ``is_stop`` ``[n_instr + R]`` bool (docs/methods.md#uqac-inputs): every instruction position
    True; response token ``t`` True when its text, all whitespace removed and lower-cased, is in
    ``stop_words`` (default :data:`UQAC_STOP_WORDS`).

    ``response_tokens``: the ``R`` response token strings, or their ids with ``tokenizer`` (each id
    decoded on its own, ``tokenizer.decode(id)``, as the reference's ``ids_to_tks`` does).
    """
    if isinstance(n_instr, bool) or int(n_instr) != n_instr or n_instr < 0:
        raise ValueError(f"n_instr must be an int >= 0, got {n_instr!r}")
    words = UQAC_STOP_WORDS if stop_words is None else frozenset(stop_words)
    if isinstance(response_tokens, Tensor):
        response_tokens = response_tokens.reshape(-1).tolist()
    toks = list(response_tokens)
    if toks and not isinstance(toks[0], str):
        if tokenizer is None:
            raise ValueError("response_tokens: token ids need a tokenizer to decode them")
        toks = [tokenizer.decode(int(t)) for t in toks]
    flags = [True] * int(n_instr) + [re.sub(r"\s+", "", t).lower() in words for t in toks]
    return torch.tensor(flags, dtype=torch.bool)
