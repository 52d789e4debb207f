"""Every core error through both front ends: the Discord bot and the MCP server word it from the
facts it carries, and agree on whether to retry, whether to fix the request, and what it cost."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime, timedelta

import pytest

import core.errors
from bot.errors import ADVICE_TEXT, user_message
from core import ADVICE, ImageGateError
from mcp_server.render import HINTS, error_result


def _error_classes() -> list[type[ImageGateError]]:
    return [
        cls
        for _, cls in inspect.getmembers(core.errors, inspect.isclass)
        if issubclass(cls, ImageGateError)
    ]


def _make(cls: type[ImageGateError]) -> ImageGateError:
    if issubclass(cls, core.errors.QuotaExceededError):
        reset = datetime.now(UTC) + timedelta(hours=3)
        return cls("you have 1 credit left; this needs 2", remaining=1, needed=2, retry_at=reset)
    if issubclass(cls, core.errors.SpendLimitError):
        return cls("this job could cost 4 credits, more than max_credits 3", price=4, limit=3)
    return cls("it went wrong")


# (job id, credits charged, refunded): nothing was reserved; a started job whose credits were
# given back; a job that was charged for what it delivered before it failed.
OUTCOMES = [(None, 0, False), ("job1", 0, True), ("job2", 2, False)]


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("outcome", OUTCOMES, ids=["nothing-held", "refunded", "charged"])
def test_both_front_ends_agree_on_retry_fix_and_refund(cls, outcome):
    error = _make(cls)
    job_id, charged, refunded = outcome
    if job_id is not None:
        error.ended_job(job_id, charged=charged, refunded=refunded)
    said = user_message(error)
    result = error_result(error, remaining=5)
    text = result.content[0].text
    job = result.structured_content
    facts = job["error"]

    assert result.is_error and facts["code"] == error.code and facts["advice"] == error.advice
    # Retry: both say it iff the error is retryable.
    assert facts["retryable"] is error.retryable
    assert ("try again" in said.lower()) is error.retryable, said
    assert ("retry this call" in text) is error.retryable, text
    # Fix the request: both say it iff that is the advice (and each says its own advice).
    assert ADVICE_TEXT[error.advice] in said and HINTS[error.advice] in text
    assert (ADVICE_TEXT["fix_request"] in said) is (error.advice == "fix_request")
    assert (HINTS["fix_request"] in text) is (error.advice == "fix_request")
    # What it cost: nothing, refunded, or charged; the same in both.
    assert facts["credits_refunded"] is refunded and job["credits_charged"] == charged
    assert job["job_id"] == job_id and job["credits_remaining"] == 5 and job["status"] != "running"
    nothing = job_id is None
    assert ("Nothing was charged" in said) is nothing and ("Nothing was charged" in text) is nothing
    assert ("credits were returned" in said) is refunded and ("refunded" in text) is refunded
    assert (f"{charged} credit(s) were charged" in said) is bool(charged)
    assert (f"charged {charged} credit(s)" in text) is bool(charged)


def test_every_kind_of_advice_has_words_in_both_front_ends():
    assert set(ADVICE_TEXT) == set(ADVICE) == set(HINTS)
    assert {cls.advice for cls in _error_classes()} <= set(ADVICE)


def test_a_quota_error_says_when_credits_come_back():
    error = _make(core.errors.QuotaExceededError)
    assert "renew in about 3 h" in user_message(error)
    facts = error_result(error).structured_content["error"]
    assert 3 * 3600 - 60 <= facts["retry_after_s"] <= 3 * 3600 and facts["retryable"] is False


def test_a_provider_rejection_is_a_request_to_fix_not_to_retry():
    error = core.errors.ProviderRejectedError("nebula rejected the request: bad size")
    assert error.advice == "fix_request" and not error.retryable
    assert "try again" not in user_message(error).lower()
    assert error_result(error).structured_content["error"]["retryable"] is False


def test_a_wait_that_is_not_finite_is_reported_as_a_day():
    error = core.errors.ProviderRateLimitedError("busy", retry_after=float("inf"))
    assert error.as_dict()["retry_after_s"] == 86_400
    assert "about 86400 s" in error_result(error).content[0].text


def test_a_provider_rate_limit_has_its_own_code_worded_as_a_provider_failure():
    error = core.errors.ProviderRateLimitedError("nebula is busy (rate limited)", retry_after=7.0)
    assert error.code == "provider_rate_limited" and error.retryable and error.advice == "retry"
    assert user_message(error).startswith("⏳ The image provider failed: nebula is busy")
    result = error_result(error)
    facts = result.structured_content["error"]
    assert facts["code"] == "provider_rate_limited" and facts["retry_after_s"] == 7
    assert result.content[0].text.startswith("provider_rate_limited: nebula is busy")
