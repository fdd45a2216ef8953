"""What a voice-ready Letta agent is: its persona and human blocks, tags, model handle and
embedding config.

The one definition, used by both places that create one: `voicectl letta create`
(voicectl/letta/agents.py) and the agent itself when LETTA_AGENT_NAME names no agent yet
(agent/clients/letta.py). Pure functions of plain values and Settings: no client, no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:  # pragma: no cover
    from agent.config import Settings

DEFAULT_PERSONA = (
    "I am a voice assistant: everything I write is spoken aloud by a text-to-speech voice.\n"
    "I answer in one to three short, natural sentences, the way a person talks.\n"
    "I never use markdown, lists, code blocks, emojis, URLs or symbols that do not read "
    "aloud well; I spell out numbers and units when that sounds more natural.\n"
    "I am warm, direct and calm. If I did not catch something, I ask a short question.\n"
    "I remember what matters about the person I talk to and use it naturally."
)
DEFAULT_HUMAN = (
    "name: unknown\n"
    "Facts and preferences the user has shared will be recorded here."
)
AGENT_TAGS = ("voicectl", "voice")
BLOCK_LIMIT = 5000
OPENAI_URL = "https://api.openai.com/v1"


class ModelHandleError(LookupError):
    """Letta offers no handle for the configured model; the message lists what it has."""


def is_openai(base_url: str | None) -> bool:
    """True for OpenAI itself (no base URL, or api.openai.com), False for a compatible proxy."""
    return not base_url or (urlsplit(base_url).hostname or "") == "api.openai.com"


def pick_model_handle(model: str, handles: list[str], openai_base_url: str | None) -> str:
    """The Letta handle for `model` among the server's `handles`.

    A handle with a slash is taken as is when offered. Otherwise an OpenAI-compatible
    OPENAI_BASE_URL (not api.openai.com) makes Letta list the endpoint's models as
    `openai-proxy/<model>`; the real OpenAI gives `openai/<model>`; failing both, any
    `<provider>/<model>`. A model Letta does not offer raises ModelHandleError.
    """
    if "/" in model:
        if model in handles:
            return model
        raise ModelHandleError(
            f"model {model!r} not offered by Letta; it has: {', '.join(handles) or 'none'}")
    order = [f"openai/{model}", f"openai-proxy/{model}"]
    if not is_openai(openai_base_url):
        order.reverse()
    for handle in order:
        if handle in handles:
            return handle
    for handle in handles:
        if handle.endswith(f"/{model}"):
            return handle
    raise ModelHandleError(
        f"model {model!r} not offered by Letta (is OPENAI_BASE_URL/OPENAI_API_KEY set for the "
        f"server?); it has: {', '.join(handles) or 'none'}"
    )


def embedding_config(model: str, endpoint: str | None, dim: int,
                     openai_base_url: str | None = None) -> dict[str, Any]:
    """The embedding config of new agents, given explicitly (Letta lists no embedding models
    of an OpenAI-compatible endpoint): type openai at `endpoint`, else OPENAI_BASE_URL, else
    OpenAI."""
    return {
        "embedding_endpoint_type": "openai",
        "embedding_endpoint": (endpoint or openai_base_url or OPENAI_URL).rstrip("/"),
        "embedding_model": model,
        "embedding_dim": int(dim),
        "embedding_chunk_size": 300,
        "batch_size": 32,
    }


def embedding_endpoint(settings: Settings) -> str | None:
    """Where new agents embed: the local embeddings service in local mode, else None
    (OPENAI_BASE_URL or OpenAI)."""
    if not settings.local_mode:
        return None
    from agent.config.local_mode import embeddings_url

    return embeddings_url(settings)


def create_args(
    name: str,
    handle: str,
    embedding: dict[str, Any],
    *,
    persona: str = DEFAULT_PERSONA,
    human: str = DEFAULT_HUMAN,
    enable_sleeptime: bool = True,
) -> dict[str, Any]:
    """The keyword arguments of `agents.create` for a voice agent."""
    return {
        "name": name,
        "model": handle,
        "embedding_config": embedding,
        "memory_blocks": [
            {"label": "persona", "value": persona, "limit": BLOCK_LIMIT},
            {"label": "human", "value": human, "limit": BLOCK_LIMIT},
        ],
        "enable_sleeptime": enable_sleeptime,
        "tags": list(AGENT_TAGS),
        "include_base_tools": True,
    }


def create_args_for(settings: Settings, name: str, handles: list[str]) -> dict[str, Any]:
    """`create_args` from the settings (LETTA_LLM_MODEL, LETTA_EMBEDDING_*, OPENAI_BASE_URL,
    local mode) and the handles the server offers."""
    base = settings.openai_base_url or None
    return create_args(
        name,
        pick_model_handle(settings.letta_llm_model, handles, base),
        embedding_config(settings.letta_embedding_model, embedding_endpoint(settings),
                         settings.letta_embedding_dim, base),
    )
