"""``api_threads`` bounds how many API handlers run at once: handlers are Python sharing one
interpreter lock, and dozens of threads queueing at it made every answer slow (see
Settings.api_threads). The app runs in this process here, so a handler can be replaced by one
that counts how many of it run at the same time."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config

from vmimport.api import actions
from vmimport.api.key_limits import KeySlots
from vmimport.config import Settings


TWO_KEYS = [{"access_key": "test", "secret_key": "test", "account_id": "000000000000"},
            {"access_key": "other", "secret_key": "other", "account_id": "111111111111"}]
FOUR_KEYS = TWO_KEYS + [{"access_key": k, "secret_key": k, "account_id": "222222222222"}
                        for k in ("third", "fourth")]


def _most_at_once(endpoint: str, monkeypatch, calls: int, keys=("test",)) -> int:
    running, most = 0, 0
    lock = threading.Lock()

    def slow_handler(ctx, params):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.3)
        with lock:
            running -= 1
        return {"Regions": []}

    monkeypatch.setitem(actions.EC2_ACTIONS, "DescribeRegions", slow_handler)
    clients = [boto3.client("ec2", endpoint_url=endpoint, region_name="us-east-1",
                            aws_access_key_id=key, aws_secret_access_key=key,
                            config=Config(max_pool_connections=calls, retries={"max_attempts": 1}))
               for key in keys]
    with ThreadPoolExecutor(calls) as pool:
        answers = list(pool.map(lambda i: clients[i % len(clients)].describe_regions(), range(calls)))
    assert all(a["ResponseMetadata"]["HTTPStatusCode"] == 200 for a in answers)
    return most


def test_at_most_api_threads_handlers_run_at_once(app_server, monkeypatch):
    endpoint = app_server(api_threads=2, credentials=TWO_KEYS)
    assert _most_at_once(endpoint, monkeypatch, calls=6, keys=("test", "other")) == 2


def test_the_default_is_a_few_threads_not_dozens(app_server, monkeypatch):
    assert Settings().api_threads == 2
    assert _most_at_once(app_server(credentials=FOUR_KEYS), monkeypatch, calls=8,
                         keys=("test", "other", "third", "fourth")) == 2


def test_one_key_leaves_a_thread_to_the_others(app_server, monkeypatch):
    # One client sending costly requests on every connection gets all threads but one.
    endpoint = app_server(credentials=TWO_KEYS, api_threads=4)
    assert _most_at_once(endpoint, monkeypatch, calls=8) == 3
    assert _most_at_once(app_server(api_threads=4, api_threads_per_key=4), monkeypatch,
                         calls=8) == 4
    # the default: one handler for a lone key, one left for the others
    assert _most_at_once(app_server(credentials=TWO_KEYS), monkeypatch, calls=8) == 1


def test_a_key_shares_the_threads_while_others_use_the_api():
    """KeySlots alone, step by step (the activity window set long: no clock decides)."""

    async def scenario():
        slots = KeySlots(per_key=3)
        slots.ACTIVE_WINDOW = 3600
        abuser = [slots.hold("abuser") for _ in range(4)]
        for hold in abuser[:3]:  # alone, a key runs 3 at once
            await hold.__aenter__()
        fourth = asyncio.create_task(abuser[3].__aenter__())
        await asyncio.sleep(0)
        assert not fourth.done()  # its 4th waits, as per_key says
        async with slots.hold("polite"):  # another key gets a thread at once
            assert slots.limit("abuser") == 1 and slots.limit("polite") == 1
            await abuser[0].__aexit__(None, None, None)
            await asyncio.sleep(0)
            assert not fourth.done()  # 2 running: alone it would start, sharing it may not
            await abuser[1].__aexit__(None, None, None)
            await abuser[2].__aexit__(None, None, None)
            await asyncio.sleep(0)
            assert fourth.done()  # its share is one, and none runs now
        await abuser[3].__aexit__(None, None, None)
        return slots._running

    assert asyncio.run(scenario()) == {"abuser": 0, "polite": 0}
