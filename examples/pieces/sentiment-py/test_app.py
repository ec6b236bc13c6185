"""python3 -m unittest discover -s examples/pieces/sentiment-py  (plain CPython, no component)."""

import json
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "..", "..", "..", "sdk", "python")]

import app  # noqa: E402
import omniflow_piece as op  # noqa: E402

CTX = op.Context("run", "step", 1, "run:step")


def score(**input):
    return json.loads(app.piece.call(CTX, "score", json.dumps(input)))


class ScoreTest(unittest.TestCase):
    def test_labels(self):
        self.assertEqual(score(text="I love it, great work")["label"], "positive")
        self.assertEqual(score(text="Terrible. It crashes.")["label"], "negative")
        self.assertEqual(score(text="It is a chair.")["label"], "neutral")

    def test_negation_and_intensifier(self):
        out = score(text="not bad, really good")
        self.assertEqual(out["matched"], [{"word": "bad", "weight": 1.85}, {"word": "good", "weight": 2.85}])
        self.assertTrue(0 < out["score"] <= 1)

    def test_extra_words_and_threshold(self):
        self.assertEqual(score(text="meh", extra_words={"meh": -1})["label"], "negative")
        self.assertEqual(score(text="works", threshold=0.9)["label"], "neutral")

    def test_errors(self):
        with self.assertRaises(op.InvalidInput):
            app.piece.call(CTX, "score", json.dumps({"text": "x" * 100_001}))
        with self.assertRaises(op.InvalidInput):
            app.piece.call(CTX, "nope", "{}")
        with self.assertRaises(op.InvalidInput):
            app.piece.call(CTX, "score", "not json")
        with self.assertRaises(op.Fatal):  # a bug (KeyError) is fatal, not a trap
            app.piece.call(CTX, "score", "{}")

    def test_info(self):
        info = app.piece.describe()
        self.assertEqual((info["name"], info["version"]), ("sentiment", "0.1.0"))
        self.assertEqual(json.loads(info["actions"][0]["input_schema"])["required"], ["text"])


if __name__ == "__main__":
    unittest.main()
