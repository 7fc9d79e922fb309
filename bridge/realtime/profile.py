"""The agent profile: what a dialplan says about the model's session, independent of the wire dialect.

A dialect table (``bridge.realtime.dialects``) turns a profile into its own session body (``session.update``,
Live's ``session.start``). A field that the target dialect lacks is rejected there, by name.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# pcm16: PCM16 at 24 kHz; pcm16_16k: PCM16 at 16 kHz (Live only); G.711 at 8 kHz
AudioFormat = Literal["pcm16", "pcm16_16k", "g711_ulaw", "g711_alaw"]
Voice = str  # validated against the model by bridge.rollout.policy (marin/cedar need gpt-realtime models)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerVad(_Strict):
    type: Literal["server_vad"] = "server_vad"
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(300, ge=0)
    silence_duration_ms: int = Field(500, ge=0)
    create_response: bool = True
    interrupt_response: bool = True
    idle_timeout_ms: int | None = Field(None, ge=5000, le=30000)  # GA only


class SemanticVad(_Strict):
    type: Literal["semantic_vad"] = "semantic_vad"
    eagerness: Literal["low", "medium", "high", "auto"] = "auto"
    create_response: bool = True
    interrupt_response: bool = True


TurnDetection = Annotated[ServerVad | SemanticVad, Field(discriminator="type")]


class Transcription(_Strict):
    model: str = "whisper-1"
    language: str | None = None
    prompt: str | None = None


class Tool(_Strict):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})

    def wire(self) -> dict[str, Any]:
        """The function tool as both dialects spell it."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
        }


class Delegation(_Strict):
    """Live only: the Responses model that takes the tasks the Live model delegates, with the profile's tools; or
    (``client``) the bridge itself, which decides what is said (an orchestrated plan)."""

    type: Literal["responses", "client"] = "responses"
    model: str = "gpt-5-mini"
    instructions: str | None = None  # the backend's own prompt; None: the profile's instructions


class AgentProfile(_Strict):
    """A dialect-neutral Realtime session configuration."""

    instructions: str = "You are a helpful phone agent. Keep answers short."
    model: str | None = None  # None: the dialect's default model
    voice: Voice = "alloy"
    output_modalities: tuple[Literal["audio", "text"], ...] = ("audio",)
    input_transcription: Transcription | None = Transcription()
    turn_detection: TurnDetection | None = ServerVad()
    noise_reduction: Literal["near_field", "far_field"] | None = None
    tools: tuple[Tool, ...] = ()
    tool_choice: Literal["auto", "none", "required"] = "auto"
    audio_format: AudioFormat = "pcm16"
    speed: float | None = Field(None, ge=0.25, le=1.5)
    temperature: float | None = Field(None, ge=0.6, le=1.2)  # beta only
    max_output_tokens: int | Literal["inf"] | None = None
    delegation: Delegation | None = None  # Live only; None: Delegation()
    # Raw wire fields merged into the session body; checked against the dialect's known session fields.
    extra: dict[str, Any] = Field(default_factory=dict)
