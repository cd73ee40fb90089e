"""The hot path's per-thread Redis connection (`config.redis.redis_lane`), on the real Redis."""

import threading
import time

import pytest
import redis
from django.conf import settings
from django.test import override_settings

from config.redis import RedisLane, get_redis, redis_lane

ECHO_SCRIPT = "return {KEYS[1], ARGV[1]}"


def test_a_script_the_server_does_not_know_is_loaded_and_run() -> None:
    get_redis().script_flush()
    lane = RedisLane(settings.REDIS_URL)
    assert lane.run_script(ECHO_SCRIPT, ["k"], ["v"]) == [b"k", b"v"]
    assert lane.run_script(ECHO_SCRIPT, ["k2"], ["v2"]) == [b"k2", b"v2"]


def test_a_connection_the_server_closed_is_reopened_once() -> None:
    lane = RedisLane(settings.REDIS_URL)
    client_id = lane.call("CLIENT", "ID")
    assert get_redis().client_kill_filter(_id=client_id) == 1
    assert lane.call("PING") == b"PONG"


def test_an_unreachable_redis_raises_after_one_attempt() -> None:
    lane = RedisLane("redis://127.0.0.1:1/0")
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        lane.call("PING")
    assert time.monotonic() - started < 1.0  # one connect, not redis-py's default retries


def test_each_thread_has_its_own_lane_and_a_new_url_gets_a_new_lane() -> None:
    mine = redis_lane()
    assert redis_lane() is mine
    seen: list[RedisLane] = []
    thread = threading.Thread(target=lambda: seen.append(redis_lane()))
    thread.start()
    thread.join()
    assert seen[0] is not mine
    with override_settings(REDIS_URL="redis://127.0.0.1:6379/14"):
        other = redis_lane()
        assert other is not mine
        assert other.url.endswith("/14")
