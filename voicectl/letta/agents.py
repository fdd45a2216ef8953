"""Create, list and find voice-ready Letta agents with letta-client 1.x.

letta_client is imported inside the functions: importing it costs time the CLI must not pay at
start. Every function takes plain arguments (URL, key, names) and returns plain dicts.
"""

from __future__ import annotations

from typing import Any

from agent.memory import letta_agent_spec as spec
from agent.memory.letta_agent_spec import AGENT_TAGS, DEFAULT_HUMAN, DEFAULT_PERSONA, OPENAI_URL

__all__ = ["AGENT_TAGS", "DEFAULT_HUMAN", "DEFAULT_PERSONA", "OPENAI_URL", "LettaAgentError",
           "create_voice_agent", "find_agent", "list_agents", "model_handles",
           "pick_model_handle", "summarize"]


class LettaAgentError(RuntimeError):
    """A Letta agent operation failed; the message says why."""


def _client(base_url: str, api_key: str | None, timeout: float) -> Any:
    from letta_client import Letta

    return Letta(base_url=base_url, api_key=api_key or "local", timeout=timeout)


def _errors() -> tuple[type[BaseException], ...]:
    import letta_client

    return (letta_client.APIError,)


def summarize(agent: Any) -> dict[str, Any]:
    """A plain dict of the facts callers need about an AgentState."""
    llm = getattr(agent, "llm_config", None)
    emb = getattr(agent, "embedding_config", None)
    group = getattr(agent, "multi_agent_group", None)
    created = getattr(agent, "created_at", None)
    blocks = getattr(getattr(agent, "memory", None), "blocks", None) or getattr(
        agent, "blocks", None
    ) or []
    return {
        "id": agent.id,
        "name": agent.name,
        "agent_type": str(getattr(agent, "agent_type", "") or ""),
        "model": (getattr(llm, "handle", None) or getattr(llm, "model", None)) if llm else None,
        "embedding": getattr(emb, "embedding_model", None) if emb else None,
        "embedding_dim": getattr(emb, "embedding_dim", None) if emb else None,
        "tags": list(getattr(agent, "tags", None) or []),
        "created_at": created.isoformat() if created is not None else None,
        "sleeptime": bool(getattr(agent, "enable_sleeptime", False)),
        "group_id": getattr(group, "id", None) if group else None,
        "blocks": {b.label: b.value for b in blocks if getattr(b, "label", None)},
    }


def _is_sleeptime_companion(agent: Any) -> bool:
    return "sleeptime" in str(getattr(agent, "agent_type", "") or "")


def list_agents(
    base_url: str, api_key: str | None, *, include_sleeptime: bool = False,
    timeout: float = 30.0,
) -> list[dict[str, Any]]:
    """All agents on the server (oldest first), without sleep-time companions by default."""
    client = _client(base_url, api_key, timeout)
    try:
        agents = list(client.agents.list(include=["agent.blocks", "agent.tags",
                                                  "agent.managed_group"], limit=1000))
    except _errors() as exc:
        raise LettaAgentError(f"listing agents at {base_url} failed: {exc}") from exc
    finally:
        client.close()
    return [summarize(a) for a in agents if include_sleeptime or not _is_sleeptime_companion(a)]


def find_agent(
    base_url: str, api_key: str | None, agent_id: str | None = None, name: str | None = None,
    *, timeout: float = 30.0,
) -> dict[str, Any] | None:
    """The agent with this id (or else the newest with this name), or None."""
    import letta_client

    if not agent_id and not name:
        raise ValueError("find_agent needs agent_id or name")
    client = _client(base_url, api_key, timeout)
    try:
        if agent_id:
            try:
                return summarize(client.agents.retrieve(
                    agent_id, include=["agent.blocks", "agent.tags", "agent.managed_group"]))
            except letta_client.NotFoundError:
                return None
        found = [a for a in client.agents.list(name=name, include=["agent.blocks", "agent.tags",
                                                                   "agent.managed_group"])
                 if a.name == name and not _is_sleeptime_companion(a)]
    except _errors() as exc:
        raise LettaAgentError(f"looking up agent at {base_url} failed: {exc}") from exc
    finally:
        client.close()
    if not found:
        return None
    found.sort(key=lambda a: str(getattr(a, "created_at", "")))
    return summarize(found[-1])


def model_handles(base_url: str, api_key: str | None, *, timeout: float = 30.0) -> list[str]:
    """The LLM handles the server offers (GET /v1/models/)."""
    client = _client(base_url, api_key, timeout)
    try:
        return [m.handle for m in client.models.list() if getattr(m, "handle", None)]
    except _errors() as exc:
        raise LettaAgentError(f"listing models at {base_url} failed: {exc}") from exc
    finally:
        client.close()


def pick_model_handle(model: str, handles: list[str], openai_base_url: str | None) -> str:
    """Choose the handle for `model` among `handles` (agent/memory/letta_agent_spec.py's rule)."""
    try:
        return spec.pick_model_handle(model, handles, openai_base_url)
    except spec.ModelHandleError as exc:
        raise LettaAgentError(str(exc)) from None


def create_voice_agent(
    base_url: str,
    api_key: str | None,
    name: str,
    model: str,
    embedding_model: str,
    embedding_endpoint: str | None,
    embedding_dim: int,
    openai_base_url: str | None,
    *,
    persona: str = DEFAULT_PERSONA,
    human: str = DEFAULT_HUMAN,
    enable_sleeptime: bool = True,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Create an agent with persona/human memory blocks and sleep-time compute.

    `model` is a bare name (gpt-5-mini) or a handle; it is resolved against GET /v1/models/.
    The embedding config is passed explicitly (Letta does not list an OpenAI-compatible
    endpoint's embedding models): endpoint type openai at `embedding_endpoint` (default:
    `openai_base_url`, else api.openai.com).
    """
    handle = pick_model_handle(model, model_handles(base_url, api_key, timeout=timeout),
                               openai_base_url)
    args = spec.create_args(
        name, handle,
        spec.embedding_config(embedding_model, embedding_endpoint, embedding_dim,
                              openai_base_url),
        persona=persona, human=human, enable_sleeptime=enable_sleeptime,
    )
    client = _client(base_url, api_key, timeout)
    try:
        agent = client.agents.create(**args)
        agent = client.agents.retrieve(
            agent.id, include=["agent.blocks", "agent.tags", "agent.managed_group"]
        )
    except _errors() as exc:
        raise LettaAgentError(f"creating agent {name!r} at {base_url} failed: {exc}") from exc
    finally:
        client.close()
    return summarize(agent)
