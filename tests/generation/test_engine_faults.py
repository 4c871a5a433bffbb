"""A failing sequence fails alone; a broken engine is rebuilt, and /health says so meanwhile."""

from __future__ import annotations

import asyncio
import time

import pytest

from parainfer.generation import EngineLoop, SamplingParams
from parainfer.serving.config import ServeConfig
from parainfer.serving.generate.service import GenerationService
from parainfer.serving.metrics import ServingMetrics


class BrokenGenerator(SamplingParams):
    """Sampled decoding whose generator is not a torch.Generator: its multinomial draw raises."""

    def make_generator(self):  # noqa: D102
        return "not a generator"


def test_a_sequence_that_fails_fails_alone_and_the_loop_goes_on(make_engine, prompts):
    engine = make_engine()
    [want] = engine.generate([prompts[0]], SamplingParams(max_tokens=6))
    with EngineLoop(engine) as loop:
        bad = loop.submit(prompts[1], BrokenGenerator(max_tokens=6, temperature=0.8))
        good = loop.submit(prompts[0], SamplingParams(max_tokens=6))
        with pytest.raises(TypeError):
            list(bad)
        outs = list(good)
        assert "".join(o.new_text for o in outs) == want.text and outs[-1].finish_reason == want.finish_reason
        assert loop.error is None
        again = list(loop.submit(prompts[0], SamplingParams(max_tokens=6)))
        assert "".join(o.new_text for o in again) == want.text
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks  # the failed one's blocks came back


def test_a_broken_engine_is_rebuilt_and_health_says_so(make_engine, prompts):
    built = []

    def factory():
        built.append(make_engine())
        return built[-1]

    service = GenerationService(ServeConfig(task="generate"), ServingMetrics(), engine_factory=factory)

    async def scenario() -> None:
        await service.start()
        await wait_for(lambda: service.ready)
        first = built[0]

        def broken_run(batch):
            raise RuntimeError("simulated device fault")
        first.runner.run = broken_run  # the next step raises: the engine's own fault, not a sequence's
        with pytest.raises(RuntimeError):
            async for _ in service.stream([prompts[0]], SamplingParams(max_tokens=4)):
                pass
        health = service.health()
        assert health["status"] in ("rebuilding", "ok") and health["engine_rebuilds"] == 1
        assert "simulated" not in str(health)
        await wait_for(lambda: service.ready)
        assert len(built) == 2 and service.loop.engine is built[1]
        outs = [out async for _, out in service.stream([prompts[0]], SamplingParams(max_tokens=4))]
        assert outs[-1].finished and outs[-1].completion_tokens == 4
        assert service.running == 0
        await service.stop()

    asyncio.run(scenario())


async def wait_for(condition, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)
