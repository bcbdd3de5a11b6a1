"""VQA accuracy as the official evaluation computes it (`vqaEval.py` of the VQA API, GT-Vision-Lab/VQA).

Re-implemented from the official script's rules, in its order of operations:

1. the predicted answer and every human answer have newlines and tabs turned into spaces and their ends stripped;
2. only when the human answers of the question are not all the same after step 1, all of them and the predicted
   answer are processed further: punctuation (`processPunctuation`), then number words, articles and
   contractions (`processDigitArticle`); a question whose ten answers are all "Two." is answered only by "Two.";
3. the question's accuracy is the mean over leaving out each human answer in turn of
   min(1, matching answers among the others / 3), so 3 matching answers of 10 give 0.9, 4 or more give 1;
4. the overall accuracy is the mean over questions, given here as a fraction (the script reports percent).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import datasets
import evaluate

# The official answer tables and the punctuation patterns live once, with the training-side normalisation.
from ..data.tasks import _COMMA_STRIP, _PERIOD_STRIP, _PUNCTUATION, _digits_and_articles
from .base import VLMetric, check_strings

logger = logging.getLogger(__name__)

HUMAN_ANSWERS = 10  # answers VQA collects per question
# The official script passes `re.UNICODE` where `Pattern.sub` takes its count, so it removes at most 32 periods.
_PERIODS_REMOVED = int(re.UNICODE)

_CITATION = """\
@inproceedings{goyal2017making,
  title={Making the {V} in {VQA} Matter: Elevating the Role of Image Understanding in Visual Question Answering},
  author={Goyal, Yash and Khot, Tejas and Summers-Stay, Douglas and Batra, Dhruv and Parikh, Devi},
  booktitle={CVPR}, year={2017}
}
"""
_INPUTS = """
Args:
    predictions: the predicted answer of each question (str).
    references: the human answers of each question (a non-empty list of str; VQA has 10).
Returns:
    accuracy: the official VQA accuracy as a fraction in [0, 1].
"""


def clean_whitespace(answer: str) -> str:
    """The official first step, applied to every answer: newlines and tabs become spaces, the ends are stripped."""
    return answer.replace("\n", " ").replace("\t", " ").strip()


def process_answer(answer: str) -> str:
    """An answer after the official `processPunctuation` then `processDigitArticle`.

    `vl_zoo.data.normalize_answer` (used for the answer vocabulary) does the same, except that it removes every
    period not followed by a digit, where the official script removes at most the first 32; the two differ only on
    answers with more than 32 such periods.
    """
    return _digits_and_articles(_process_punctuation(answer))


def _process_punctuation(text: str) -> str:
    """The official `processPunctuation`: each mark is dropped or becomes a space, then periods are dropped.

    A mark is dropped when it stands next to a space anywhere in the answer, or when the answer holds a
    digit-comma-digit group; otherwise it becomes a space. Periods not followed by a digit are then dropped.
    """
    digit_comma = _COMMA_STRIP.search(text) is not None
    output = text
    for mark in _PUNCTUATION:
        spaced = f"{mark} " in text or f" {mark}" in text
        output = output.replace(mark, "" if spaced or digit_comma else " ")
    return _PERIOD_STRIP.sub("", output, count=_PERIODS_REMOVED)


def vqa_score(prediction: str, answers: Sequence[str]) -> float:
    """The official accuracy of one predicted answer against the human answers of its question (see the module)."""
    prediction = clean_whitespace(prediction)
    answers = [clean_whitespace(answer) for answer in answers]
    if len(set(answers)) > 1:
        prediction = process_answer(prediction)
        answers = [process_answer(answer) for answer in answers]

    matches = sum(answer == prediction for answer in answers)
    # Leaving out a matching answer leaves matches - 1 among the others; summed in answer order, as the script does.
    return sum(min(1, (matches - (answer == prediction)) / 3) for answer in answers) / len(answers)


class VQAAccuracy(VLMetric):
    """VQA accuracy with the official answer processing and leave-one-out averaging (see the module docstring)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="VQA accuracy: the official evaluation's answer processing and leave-one-out soft score.",
            citation=_CITATION,
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
            ),
            homepage="https://visualqa.org/evaluation.html",
            codebase_urls=["https://github.com/GT-Vision-Lab/VQA"],
        )

    def _checked(self, predictions: Sequence[Any], references: Sequence[Any]) -> dict[str, Any]:
        check_strings("predictions", predictions)
        for index, answers in enumerate(references):
            if isinstance(answers, (str, bytes)) or not hasattr(answers, "__len__"):
                raise ValueError(
                    f"references[{index}] must be the list of human answers of question {index}, "
                    f"got {type(answers).__name__} {answers!r}"
                )
            if len(answers) == 0:
                raise ValueError(
                    f"references[{index}] is an empty list; each question needs its human answers "
                    f"({HUMAN_ANSWERS} in VQA) to be scored"
                )
            check_strings(f"references[{index}]", answers)
        return {"predictions": predictions, "references": references}

    def _compute(self, predictions: list[str], references: list[list[str]]) -> dict[str, float]:
        unusual = sum(len(answers) != HUMAN_ANSWERS for answers in references)
        if unusual:
            logger.warning(
                "%d of %d questions have other than %d human answers; the leave-one-out mean is taken over the "
                "answers given (a question with a single answer always scores 0)",
                unusual,
                len(references),
                HUMAN_ANSWERS,
            )
        scores = [vqa_score(prediction, answers) for prediction, answers in zip(predictions, references, strict=True)]
        return {"accuracy": sum(scores) / len(scores)}
