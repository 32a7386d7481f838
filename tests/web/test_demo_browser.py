"""The demo page in a real browser (Debian's chromium driven by Playwright)
against the demo app on uvicorn on loopback: a reload or a second tab mid-reply
shows exactly the reply, and Stop ends every page."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from resumable_fast import ResumableStreamContext
from resumable_fast.demo.app import create_app, start_server
from resumable_fast.demo.llm import full_reply
from resumable_fast.demo.metrics import PrometheusMetrics
from resumable_fast.demo.model import OpenAICompatibleModel

from conftest import ContextFactory, ServeDemo
from fake_provider import fake_provider_server
from fake_provider import reply_tokens as provider_reply_tokens

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
STEP_MS = 20_000  # any single wait in the page
REPLY_MS = 60_000  # a whole reply, at the slowest pace used here


@pytest.fixture
def chromium() -> Path:
    """Debian's chromium; missing, the test fails (it is never skipped)."""
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests drive Debian's chromium. "
            "`make test` installs it (apt-get install chromium)."
        )
    ARTIFACTS.mkdir(exist_ok=True)
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS, timeout=60_000
        )
        try:
            yield launched
        finally:
            await asyncio.wait_for(launched.close(), 30)


class PageErrors:
    """Collects script errors and console errors (CSP violations among them)."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def watch(self, page: Page) -> Page:
        page.set_default_timeout(STEP_MS)
        page.on("pageerror", lambda error: self.messages.append(f"page error: {error}"))
        page.on(
            "console",
            lambda message: (
                self.messages.append(f"console: {message.text}")
                if message.type == "error"
                else None
            ),
        )
        return page


async def new_page(context: BrowserContext, errors: PageErrors) -> Page:
    return errors.watch(await context.new_page())


async def reply_text(page: Page) -> str:
    text = await page.locator("#reply").text_content()
    return text or ""


async def wait_for_reply_length(page: Page, length: int) -> None:
    await page.wait_for_function(
        "n => (document.getElementById('reply')?.textContent.length ?? 0) >= n",
        arg=length,
        timeout=STEP_MS,
    )


async def send(page: Page, prompt: str) -> None:
    await page.locator("#prompt").fill(prompt)
    await page.locator("#send").click()
    await expect(page.locator("#status")).to_have_text("streaming", timeout=STEP_MS)


async def send_then_reload_mid_reply(
    page: Page, prompt: str, expected: str, min_length: int
) -> None:
    """Send ``prompt``, wait for ``min_length`` characters of the reply (a
    prefix of ``expected``), then reload the page while the reply streams."""
    await send(page, prompt)
    await wait_for_reply_length(page, min_length)
    before_reload = await reply_text(page)
    assert expected.startswith(before_reload)
    assert len(before_reload) < len(expected), "the reply ended before the reload"
    await page.reload()
    await wait_for_reply_length(page, 1)
    assert await page.locator("#status").text_content() in ("streaming", "connecting")


async def test_reload_and_second_tab_show_the_exact_reply(
    serve: ServeDemo, browser: Browser, backend_name: str
) -> None:
    server = await serve(60.0)  # a reply takes ~8 s
    prompt = "Why do resumable streams matter for chat apps?"
    expected = full_reply(prompt)
    errors = PageErrors()
    context = await browser.new_context(viewport={"width": 1000, "height": 900})
    try:
        page = await new_page(context, errors)
        await page.goto(f"{server.url}/")
        await expect(page.locator("#backend")).not_to_have_text("loading…")
        assert (await page.locator("#backend").text_content() or "").startswith(
            "embedded" if backend_name.startswith("embedded") else "s2 (basin "
        )
        await expect(page.locator("#status")).to_have_text("idle")

        await send_then_reload_mid_reply(page, prompt, expected, 60)
        assert "#demo-" in page.url

        # A second tab on the same address, mid-reply.
        second = await new_page(context, errors)
        await second.goto(page.url)
        # And the same address in another browser profile, which has no history.
        stranger_context = await browser.new_context()
        stranger = await new_page(stranger_context, errors)
        await stranger.goto(page.url)
        assert await second.locator("#status").text_content() in ("streaming", "connecting")
        # While it streams, every page only ever shows a prefix of the reply.
        for _ in range(5):
            for shown in (page, second, stranger):
                assert expected.startswith(await reply_text(shown))
            await asyncio.sleep(0.2)

        for shown in (page, second, stranger):
            await expect(shown.locator("#status")).to_have_text("done", timeout=REPLY_MS)
            assert await reply_text(shown) == expected
            await expect(shown.locator("#stop")).to_be_disabled()
            await expect(shown.locator("#send")).to_be_enabled()
        await expect(page.locator(".prompt-text")).to_have_text(prompt)
        await expect(second.locator(".prompt-text")).to_have_text(prompt)
        await expect(stranger.locator(".prompt-text")).to_have_text(
            "(this message was sent from another browser)"
        )

        # A reload after the end shows the same reply, and the page takes a new message.
        await page.reload()
        await expect(page.locator("#status")).to_have_text("done")
        assert await reply_text(page) == expected
        await page.screenshot(path=str(ARTIFACTS / "demo.png"), full_page=True)

        await send(page, "And a follow-up question?")
        await expect(page.locator("#status")).to_have_text("done", timeout=REPLY_MS)
        assert await reply_text(page) == full_reply("And a follow-up question?")
        await expect(page.locator(".turn")).to_have_count(2)
        await stranger_context.close()
    finally:
        await context.close()
    assert errors.messages == []


async def test_stop_ends_both_pages(serve: ServeDemo, browser: Browser) -> None:
    server = await serve(30.0)
    prompt = "Please write a very long essay."
    expected = full_reply(prompt)
    errors = PageErrors()
    context = await browser.new_context()
    try:
        page = await new_page(context, errors)
        await page.goto(f"{server.url}/")
        await send(page, prompt)
        await wait_for_reply_length(page, 40)
        second = await new_page(context, errors)
        await second.goto(page.url)
        await wait_for_reply_length(second, 40)
        await expect(second.locator("#stop")).to_be_enabled()

        await page.locator("#stop").click()
        for shown in (page, second):
            await expect(shown.locator("#status")).to_have_text("stopped", timeout=STEP_MS)
            await expect(shown.locator("#stop")).to_be_disabled()
        stopped_text = await reply_text(page)
        await asyncio.sleep(1.0)  # no more text arrives after the stop
        assert await reply_text(page) == stopped_text
        assert await reply_text(second) == stopped_text
        assert 0 < len(stopped_text) < len(expected)
        assert expected.startswith(stopped_text)

        # A reload shows the stopped reply as it ended.
        await second.reload()
        await expect(second.locator("#status")).to_have_text("stopped")
        assert await reply_text(second) == stopped_text
    finally:
        await context.close()
    assert errors.messages == []


async def test_page_reconnects_after_a_server_restart(serve: ServeDemo, browser: Browser) -> None:
    """The server goes away mid-reply and comes back (another replica on the same
    address): the page's EventSource reconnects with Last-Event-ID and the reply
    ends exactly, with nothing repeated or lost."""
    server = await serve(60.0)
    port = int(server.url.rsplit(":", 1)[1])
    prompt = "What happens when the server restarts?"
    expected = full_reply(prompt)
    errors = PageErrors()
    context = await browser.new_context()
    try:
        page = await new_page(context, errors)
        await page.goto(f"{server.url}/")
        await send(page, prompt)
        await wait_for_reply_length(page, 60)
        await server.stop()
        await expect(page.locator("#status")).to_have_text("reconnecting", timeout=STEP_MS)
        cut_at = await reply_text(page)
        assert 0 < len(cut_at) < len(expected)
        assert expected.startswith(cut_at)

        await serve(60.0, port)  # the producer ran on meanwhile, in the context
        await expect(page.locator("#status")).to_have_text("done", timeout=REPLY_MS)
        assert await reply_text(page) == expected
    finally:
        await context.close()
    # Chromium logs the refused reconnect attempts as console errors.
    assert [m for m in errors.messages if "ERR_CONNECTION_REFUSED" not in m] == []


async def test_reload_mid_reply_from_a_real_model_endpoint(
    ctx: ResumableStreamContext, browser: Browser
) -> None:
    """The demo on a real model (an OpenAI-compatible endpoint, asked through
    the openai SDK): the page names the model, and a reload mid-reply shows the
    model's whole reply exactly, nothing repeated."""
    prompt = "Stream a reply from the model behind the endpoint."
    tokens = 80
    api_key = "sk-proj-SECRET-KEY-browser-3e8d"
    expected = "".join(provider_reply_tokens(prompt, tokens))
    errors = PageErrors()
    with fake_provider_server(pace_s=0.05, tokens=tokens) as provider:  # ~4 s a reply
        model = OpenAICompatibleModel(
            base_url=provider.openai_base_url, model="fake-model", api_key=api_key
        )
        app = create_app(
            ctx, backend_name=ctx.backend_description, model=model, heartbeat_interval=0.5
        )
        server = await start_server(app, host="127.0.0.1", port=0, graceful_timeout=1)
        context = await browser.new_context()
        try:
            page = await new_page(context, errors)
            await page.goto(f"{server.url}/")
            await expect(page.locator("#model")).to_have_text(
                f"fake-model at {provider.openai_base_url}"
            )

            await send_then_reload_mid_reply(page, prompt, expected, 1)
            for _ in range(5):  # while it streams, only ever a prefix of the reply
                assert expected.startswith(await reply_text(page))
                await asyncio.sleep(0.1)
            await expect(page.locator("#status")).to_have_text("done", timeout=REPLY_MS)
            assert await reply_text(page) == expected
            assert api_key not in await page.content()
            # The reload resumed the reply: the model was asked once.
            assert provider.requests_for(prompt) == 1
        finally:
            await context.close()
            await server.stop()
    assert errors.messages == []


async def test_metrics_panel_shows_the_reply(new_context: ContextFactory, browser: Browser) -> None:
    """With a metrics source the page shows a live panel read from /metrics,
    which counts the reply the page asked for."""
    metrics = PrometheusMetrics()
    stream_context = new_context(meter_provider=metrics.meter_provider)
    app = create_app(
        stream_context,
        backend_name=stream_context.backend_description,
        tokens_per_second=50.0,  # a reply takes ~10 s: the panel polls every 2 s
        metrics=metrics,
    )
    server = await start_server(app, host="127.0.0.1", port=0, graceful_timeout=1)
    errors = PageErrors()
    context = await browser.new_context()
    try:
        page = await new_page(context, errors)
        await page.goto(f"{server.url}/")
        panel = page.locator("#metrics-panel")
        await expect(panel).to_be_visible()
        await send(page, "count this reply")
        await expect(panel.locator('[data-metric="readers_active"]')).to_have_text("1")
        await expect(page.locator("#status")).to_have_text("done", timeout=REPLY_MS)
        await expect(panel.locator('[data-metric="streams_started"]')).to_have_text("1")
        await expect(panel.locator('[data-metric="streams_active"]')).to_have_text("0")
        await expect(panel.locator('[data-metric="append_ms"]')).to_have_text(re.compile(r" ms$"))
        chunks = await panel.locator('[data-metric="chunks_persisted"]').text_content()
        assert int((chunks or "0").replace(",", "")) > 10
    finally:
        await context.close()
        await server.stop()
        await stream_context.aclose()
        metrics.shutdown()
    assert errors.messages == []
