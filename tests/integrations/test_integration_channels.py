"""Django Channels consumers with the tidescope mixin, driven by Channels'
``WebsocketCommunicator``: sync, async and JSON consumers, refusals, crashes, channel-layer
group messages, and a consumer behind the ASGI middleware."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, ClassVar

import pytest

import tidescope
from tidescope import EventType
from tidescope.capture import runtime as rt
from tidescope.integrations.asgi import TideScopeMiddleware
from tidescope.integrations.channels import TideScopeConsumerMixin, traced_consumer

IN_MEMORY_LAYER = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
CRASH = ValueError("consumer crash")


def work(x: Any) -> Any:
    """A function as the import hook would instrument it."""
    cid = rt.report_function_entry(__name__, "work", [x])
    rt.report_function_exit(cid, x)
    return x


class Hostile:
    """An object whose every hook raises: recording it must not call any of them."""

    def __repr__(self) -> str:
        raise AssertionError("__repr__ called")

    def __eq__(self, other: object) -> bool:
        raise AssertionError("__eq__ called")

    __hash__ = object.__hash__

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"__getattr__({name}) called")


def consumers() -> dict[str, Any]:
    from channels.generic.websocket import (
        AsyncJsonWebsocketConsumer,
        AsyncWebsocketConsumer,
        WebsocketConsumer,
    )

    class Counter(TideScopeConsumerMixin, WebsocketConsumer):
        def connect(self) -> None:
            self.room = self.scope["url_route"]["kwargs"]["room"]
            self.count = 0
            self.accept()

        def receive(self, text_data: Any = None, bytes_data: Any = None) -> None:
            self.count += 1
            self.send(text_data=f"{work(text_data)}:{self.count}")

    class AsyncEcho(TideScopeConsumerMixin, AsyncWebsocketConsumer):
        async def connect(self) -> None:
            self.seen: list[Any] = []
            self.hostile = Hostile()  # state whose code must never run when recorded
            await self.accept()

        async def receive(self, text_data: Any = None, bytes_data: Any = None) -> None:
            self.seen.append(work(text_data or bytes_data))
            if text_data == "crash":
                raise CRASH
            if text_data is not None:
                await self.send(text_data=text_data.upper())

    class Refuse(TideScopeConsumerMixin, WebsocketConsumer):
        def connect(self) -> None:
            self.close(code=4001)

    class Plain(AsyncJsonWebsocketConsumer):
        groups: ClassVar[list[str]] = ["lobby"]

        async def connect(self) -> None:
            self.messages = 0
            await self.accept()

        async def receive_json(self, content: Any, **kwargs: Any) -> None:
            await self.send_json({"echo": content})

        async def chat_message(self, event: Any) -> None:
            self.messages += 1
            await self.send_json({"chat": event["text"]})

    return {"Counter": Counter, "AsyncEcho": AsyncEcho, "Refuse": Refuse, "Plain": Plain}


def application() -> Any:
    from channels.routing import URLRouter
    from django.urls import path

    c = consumers()
    return URLRouter(
        [
            path("count/<room>/", c["Counter"].as_asgi()),
            path("echo/", c["AsyncEcho"].as_asgi()),
            path("refuse/", c["Refuse"].as_asgi()),
            path("lobby/", traced_consumer(c["Plain"]).as_asgi()),
        ]
    )


@pytest.fixture
def communicator(
    web_django: Callable[..., None], web_websocket_communicator: Callable[[], Any]
) -> Any:
    web_django([], [], CHANNEL_LAYERS=IN_MEMORY_LAYER)
    return web_websocket_communicator()


def types_of(events: list[Any]) -> list[str]:
    return [str(e.event_type) for e in events]


def test_sync_consumer_join_messages_state_and_sends(communicator: Any) -> None:
    async def main() -> list[Any]:
        ws = communicator(application(), "/count/blue/?lang=fr")
        assert await ws.connect() == (True, None)
        await ws.send_to(text_data="hi")
        first = await ws.receive_from()
        await ws.send_to(text_data="hé")
        second = await ws.receive_from()
        await ws.disconnect()
        return [first, second]

    with tidescope.capture() as cap:
        assert asyncio.run(main()) == ["hi:1", "hé:2"]
    events = cap.events()
    assert len({e.correlation_id for e in events}) == 1
    message = [
        "channel_message_start", "live_handle_event_start", "function_entry", "function_exit",
        "message_send", "live_handle_event_complete", "live_assigns_change",
        "channel_message_complete",
    ]  # fmt: skip
    assert types_of(events) == [
        "channel_join_start", "live_mount_start", "live_mount_complete", "channel_join_complete",
        *message, *message,
        "channel_message_start", "live_callback", "live_callback_success",
        "channel_message_complete",
    ]  # fmt: skip
    by = {t: [e for e in events if e.event_type == t] for t in set(types_of(events))}
    (join_start,) = by["channel_join_start"]
    assert join_start.data["topic"] == "/count/blue/"
    assert join_start.data["payload"] == {"params": {"lang": "fr"}, "route": {"room": "blue"}}
    (mount,) = by["live_mount_complete"]
    assert mount.data["module"].endswith("consumers.<locals>.Counter")
    assert mount.data["socket_assigns"] == {"room": "blue", "count": 0}
    assert by["channel_join_complete"][0].data["result"] == {"accepted": True}
    starts = by["live_handle_event_start"]
    assert [s.data["params"] for s in starts] == ["hi", "hé"]
    assert [s.data["socket_assigns"]["count"] for s in starts] == [0, 1]
    done = by["live_handle_event_complete"]
    assert done[1].data["before_assigns"]["count"] == 1
    assert done[1].data["result"] == {"assigns": {"room": "blue", "count": 2}}
    assert [e.data["socket"]["count"] for e in by["live_assigns_change"]] == [1, 2]
    assert by["message_send"][0].data["message"] == {"type": "websocket.send", "text": "hi:1"}
    assert [e.data["result"] for e in by["channel_message_complete"]] == [
        {"sent": 1}, {"sent": 1}, {"sent": 0},
    ]  # fmt: skip
    assert by["channel_message_start"][-1].data["event"] == "disconnect"
    calls = by["function_entry"]
    assert calls[0].thread_id != join_start.thread_id  # sync handlers run in a worker thread


def test_a_connection_dropped_mid_handler_is_recorded_as_interrupted(communicator: Any) -> None:
    async def main() -> Any:
        ws = communicator(application(), "/refuse/")
        return await ws.connect()  # then asyncio.run cancels the consumer still in connect()

    with tidescope.capture() as cap:
        assert asyncio.run(main()) == (False, 4001)
    (join,) = cap.events(EventType.CHANNEL_JOIN_COMPLETE)
    assert join.data["result"]["interrupted"] == "asyncio.exceptions.CancelledError"
    assert cap.events(EventType.ERROR) == []


def test_async_consumer_crash_is_reported_and_reraised_unchanged(communicator: Any) -> None:
    async def main() -> None:
        ws = communicator(application(), "/echo/")
        await ws.connect()
        await ws.send_to(bytes_data=b"\x00\xff")
        await ws.send_to(text_data="crash")
        with pytest.raises(ValueError) as info:
            await ws.wait()
        assert info.value is CRASH

    with tidescope.capture() as cap:
        asyncio.run(main())
    events = cap.events()
    complete = [e for e in events if e.event_type == EventType.LIVE_HANDLE_EVENT_COMPLETE]
    assert complete[0].data["params"] == b"\x00\xff"
    assert complete[1].data["result"]["assigns"]["seen"] == [b"\x00\xff", "crash"]
    assert complete[1].data["result"]["error"] == "ValueError"
    assert complete[1].data["result"]["assigns"]["hostile"].type_name.endswith("Hostile")
    channel_done = [e for e in events if e.event_type == EventType.CHANNEL_MESSAGE_COMPLETE]
    assert channel_done[-1].data["result"] == {"sent": 0, "error": "ValueError"}
    (error,) = [e for e in events if e.event_type == EventType.ERROR]
    assert error.data["error_type"] == "builtins.ValueError"
    assert len({e.correlation_id for e in events}) == 1


def test_refused_connection_completes_the_join_as_refused(communicator: Any) -> None:
    async def main() -> Any:
        ws = communicator(application(), "/refuse/")
        refused = await ws.connect()
        await ws.disconnect()
        return refused

    with tidescope.capture() as cap:
        assert asyncio.run(main()) == (False, 4001)
    (join,) = cap.events(EventType.CHANNEL_JOIN_COMPLETE)
    assert join.data["result"] == {"accepted": False}
    assert cap.events(EventType.MESSAGE_SEND) == []


def test_traced_consumer_reports_json_messages_and_group_messages(communicator: Any) -> None:
    from channels.layers import get_channel_layer

    async def main() -> list[Any]:
        ws = communicator(application(), "/lobby/")
        await ws.connect()
        await ws.send_json_to({"a": [1, None, "ü"]})
        echoed = await ws.receive_json_from()
        await get_channel_layer().group_send("lobby", {"type": "chat.message", "text": "yo"})
        chat = await ws.receive_json_from()
        await ws.disconnect()
        return [echoed, chat]

    with tidescope.capture() as cap:
        assert asyncio.run(main()) == [{"echo": {"a": [1, None, "ü"]}}, {"chat": "yo"}]
    events = cap.events()
    layer = [e for e in events if e.event_type == EventType.LIVE_CALLBACK]
    assert layer[0].data["callback_name"] == "chat.message"
    success = [e for e in events if e.event_type == EventType.LIVE_CALLBACK_SUCCESS]
    assert success[0].data["socket"] == {"messages": 1}
    sends = [e.data["message"] for e in events if e.event_type == EventType.MESSAGE_SEND]
    assert [m["text"] for m in sends] == ['{"echo": {"a": [1, null, "\\u00fc"]}}', '{"chat": "yo"}']
    mount = cap.events(EventType.LIVE_MOUNT_START)[0]
    assert mount.data["module"].endswith("consumers.<locals>.Plain")


def test_under_the_asgi_middleware_channel_events_are_reported_once(communicator: Any) -> None:
    async def main() -> None:
        ws = communicator(TideScopeMiddleware(application()), "/count/red/")
        await ws.connect()
        await ws.send_to(text_data="x")
        await ws.receive_from()
        await ws.disconnect()

    with tidescope.capture() as cap:
        asyncio.run(main())
    events = cap.events()
    assert len({e.correlation_id for e in events}) == 1
    kinds = types_of(events)
    assert kinds.count("channel_join_start") == 1
    assert kinds.count("channel_join_complete") == 1
    assert kinds.count("message_send") == 1
    assert kinds.count("live_mount_start") == 1
    assert kinds.count("live_handle_event_complete") == 1


def test_hostile_scope_and_payloads_are_captured_safely(communicator: Any) -> None:
    async def main() -> None:
        ws = communicator(application(), "/echo/?" + "q=" + "v" * 100_000)
        ws.scope["client"] = None
        await ws.connect()
        await ws.send_to(text_data="😀" * 200_000)
        assert len(await ws.receive_from()) == 200_000
        await ws.disconnect()

    with tidescope.capture() as cap:
        asyncio.run(main())
    (start,) = cap.events(EventType.LIVE_HANDLE_EVENT_START)
    assert len(repr(start.data)) < 20_000
    assert cap.events(EventType.ERROR) == []


def test_capture_off_the_consumer_works_and_nothing_is_recorded(communicator: Any) -> None:
    async def main() -> Any:
        ws = communicator(application(), "/count/green/")
        await ws.connect()
        await ws.send_to(text_data="a")
        reply = await ws.receive_from()
        await ws.disconnect()
        return reply

    assert asyncio.run(main()) == "a:1"
    with tidescope.capture() as cap:
        pass
    assert cap.events() == []
