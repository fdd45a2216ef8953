"""The livekit-agents Agent of voicectl: the Brain stands in for its LLM step.

livekit.agents is heavy to import: only what starts a session (a worker job, `voicectl chat`,
`voicectl say`) imports this module, inside the function that starts it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from livekit.agents import Agent, llm
from livekit.agents.voice.agent import ModelSettings

from agent.brain.brain import Brain, instructions_for


class VoiceAgent(Agent):
    """The livekit Agent whose `llm_node` is the Brain (it streams its own text)."""

    def __init__(self, brain: Brain, **kwargs: Any) -> None:
        super().__init__(instructions=instructions_for(brain.settings), **kwargs)
        self.brain = brain

    def llm_node(
        self,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool],
        model_settings: ModelSettings,
    ) -> AsyncIterator[str]:
        return self.brain.reply(chat_ctx)
