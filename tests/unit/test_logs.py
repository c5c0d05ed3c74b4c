"""Log lines: JSON or text (CONSENTRY_LOG_FORMAT), with the ids known where they were logged,
and never a raw user id."""

from __future__ import annotations

import io
import logging
import logging.config

import orjson
import pytest

from consentry.logs import ContextFilter, bound, formatter, ids, logging_config, user_ref


def capture(fmt: str) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(fmt))
    handler.addFilter(ContextFilter("ingest"))
    logger = logging.getLogger(f"consentry.test.{fmt}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_a_json_line_has_the_fields_and_the_ids_and_hashes_the_user() -> None:
    logger, stream = capture("json")
    logger.info("purged %d rows", 3, extra=ids(user_id="u-secret-42", objection_id="obj-1", topic="t", partition=2, offset=17))

    [line] = stream.getvalue().splitlines()
    entry = orjson.loads(line)
    assert entry["level"] == "INFO" and entry["service"] == "ingest" and entry["logger"] == "consentry.test.json"
    assert entry["message"] == "purged 3 rows"
    assert entry["time"].endswith("Z") and "T" in entry["time"]
    assert {k: entry[k] for k in ("user", "objection_id", "topic", "partition", "offset")} == {
        "user": user_ref("u-secret-42"), "objection_id": "obj-1", "topic": "t", "partition": 2, "offset": 17,
    }
    assert "u-secret-42" not in line


def test_bound_ids_reach_every_line_inside_and_no_line_after() -> None:
    logger, stream = capture("json")
    with bound(request_id="req-1", user_id="u-1"):
        logger.warning("inside")
    logger.warning("after")

    inside, after = (orjson.loads(line) for line in stream.getvalue().splitlines())
    assert inside["request_id"] == "req-1" and inside["user"] == user_ref("u-1")
    assert "request_id" not in after and "user" not in after


def test_an_exception_is_one_json_line_with_its_traceback() -> None:
    logger, stream = capture("json")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("failed")

    [line] = stream.getvalue().splitlines()
    assert "RuntimeError: boom" in orjson.loads(line)["error"]


def test_the_text_form_is_readable_with_the_ids_in_brackets() -> None:
    logger, stream = capture("text")
    logger.info("hello", extra=ids(objection_id="obj-9", partition=1))

    line = stream.getvalue().strip()
    assert " INFO ingest consentry.test.text: hello [objection_id=obj-9 partition=1]" in line


def test_the_user_pseudonym_is_stable_and_does_not_show_the_id() -> None:
    assert user_ref("alice") == user_ref("alice") != user_ref("bob")
    assert len(user_ref("alice")) == 16 and "alice" not in user_ref("alice")


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError):
        formatter("xml")


def test_the_dict_config_installs_one_handler_on_the_root(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        logging.config.dictConfig(logging_config("sink", "DEBUG", "json"))
        [handler] = root.handlers
        assert isinstance(handler.formatter, logging.Formatter) and type(handler.formatter).__name__ == "JsonFormatter"
        assert root.level == logging.DEBUG and logging.getLogger("aiokafka").level == logging.WARNING
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
