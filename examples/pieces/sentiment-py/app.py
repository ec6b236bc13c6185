"""sentiment: a keyword sentiment scorer, an example OmniFlow piece in Python.

Each known word has a weight in [-3, 3]. A negation ("not", "never", "no"...)
in the three words before a word (in the same clause: punctuation stops it)
flips and damps it; an intensifier ("very", "really"...) right before it
multiplies it by 1.5. The sum is squashed into [-1, 1] with
sum / sqrt(sum^2 + 16).
"""

import math
import re

from omniflow_piece import InvalidInput, Piece, log

LEXICON = {
    # positive
    "good": 1.9, "great": 3.0, "excellent": 3.0, "amazing": 2.8, "awesome": 2.8,
    "love": 3.0, "loved": 2.9, "like": 1.5, "liked": 1.5, "nice": 1.8, "happy": 2.7,
    "glad": 2.0, "fast": 1.2, "easy": 1.6, "helpful": 1.9, "recommend": 1.8,
    "fantastic": 2.9, "perfect": 2.9, "pleasant": 1.8, "reliable": 1.7,
    "smooth": 1.4, "works": 1.0, "fixed": 1.1, "thanks": 1.6, "thank": 1.5,
    "best": 3.0, "better": 1.6, "enjoy": 2.2, "enjoyed": 2.2, "wonderful": 2.9,
    # negative
    "bad": -2.5, "terrible": -3.0, "awful": -3.0, "horrible": -3.0, "hate": -2.9,
    "hated": -2.9, "slow": -1.4, "broken": -2.2, "bug": -1.3, "bugs": -1.5,
    "crash": -2.2, "crashes": -2.3, "crashed": -2.2, "poor": -2.1, "worse": -2.2,
    "worst": -3.0, "annoying": -1.9, "useless": -2.5, "disappointed": -2.2,
    "disappointing": -2.3, "fail": -2.0, "fails": -2.0, "failed": -2.0,
    "error": -1.5, "errors": -1.6, "confusing": -1.6, "expensive": -1.1,
    "refund": -1.3, "sad": -2.1, "angry": -2.5, "problem": -1.5, "problems": -1.7,
}
NEGATIONS = {"not", "no", "never", "none", "nobody", "nothing", "neither", "nor",
             "cannot", "without", "isn't", "wasn't", "aren't", "don't", "doesn't",
             "didn't", "won't", "can't", "couldn't", "shouldn't", "hardly"}
INTENSIFIERS = {"very", "really", "extremely", "so", "super", "incredibly", "totally",
                "absolutely", "completely", "highly"}
WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
CLAUSE = re.compile(r"[.,;:!?()\n]+")
MAX_TEXT = 100_000

piece = Piece("sentiment", "0.1.0", "Keyword sentiment scorer (no model, no network)")


@piece.action(
    "score",
    "Score the sentiment of a text: score in [-1, 1], a label and the words that counted",
    input_schema={
        "type": "object",
        "required": ["text"],
        "additionalProperties": False,
        "properties": {
            "text": {"type": "string", "description": "The text to score"},
            "threshold": {
                "type": "number", "minimum": 0, "maximum": 1, "default": 0.05,
                "description": "|score| below this is neutral",
            },
            "extra_words": {
                "type": "object",
                "additionalProperties": {"type": "number", "minimum": -3, "maximum": 3},
                "description": "More words and their weights (override the built-in ones)",
            },
        },
    },
    output_schema={
        "type": "object",
        "required": ["score", "label", "matched"],
        "properties": {
            "score": {"type": "number", "minimum": -1, "maximum": 1},
            "label": {"enum": ["positive", "neutral", "negative"]},
            "matched": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["word", "weight"],
                    "properties": {"word": {"type": "string"}, "weight": {"type": "number"}},
                },
            },
        },
    },
)
def score(ctx, input):
    text = input["text"]
    if len(text) > MAX_TEXT:
        raise InvalidInput(f"text is {len(text)} characters; at most {MAX_TEXT} are scored")
    lexicon = LEXICON
    extra = input.get("extra_words") or {}
    if extra:
        lexicon = dict(LEXICON)
        lexicon.update({w.lower(): float(v) for w, v in extra.items()})
    threshold = float(input.get("threshold", 0.05))

    total = 0.0
    matched = []
    count = 0
    # A negation reaches at most three words back, never across punctuation.
    for clause in CLAUSE.split(text.lower()):
        words = WORD.findall(clause)
        count += len(words)
        for i, word in enumerate(words):
            weight = lexicon.get(word)
            if weight is None:
                continue
            if i > 0 and words[i - 1] in INTENSIFIERS:
                weight *= 1.5
            if any(w in NEGATIONS for w in words[max(0, i - 3):i]):
                weight *= -0.74
            weight = round(weight, 3)
            total += weight
            matched.append({"word": word, "weight": weight})

    value = round(total / math.sqrt(total * total + 16), 4) if total else 0.0
    label = "positive" if value >= threshold else "negative" if value <= -threshold else "neutral"
    log.debug(f"{count} words, {len(matched)} matched, sum {total:.3f}")
    return {"score": value, "label": label, "matched": matched}


Handler = piece.handler()
