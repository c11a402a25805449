"""Request bodies of the gateway's routes, checked before anything is held or recorded.

Parameters the gateway does not know are kept and passed on to OpenAI-compatible
providers as they are (vendors have their own: top_k, repetition_penalty, ...)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_TOKENS = 1_000_000
"""Above any model's context window: a larger max_tokens is a mistake."""
MAX_MESSAGES = 10_000
MAX_TOOLS = 128
MAX_INPUTS = 2048
"""Texts in one embeddings request, as OpenAI allows."""


def check_schema(schema: Any, what: str) -> None:
    if not isinstance(schema, dict):
        raise ValueError(f"{what} must be a JSON Schema object")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        raise ValueError(f"{what} is not a valid JSON Schema: {exc.message}"
                         + (f" (at {where})" if where else "")) from None


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")


# -- content parts -------------------------------------------------------------------------


class TextPart(Open):
    type: Literal["text"]
    text: str


class ImageURL(Open):
    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(Open):
    type: Literal["image_url"]
    image_url: ImageURL


class AudioPart(Open):
    type: Literal["input_audio"]
    input_audio: dict[str, Any]


class FilePart(Open):
    type: Literal["file"]
    file: dict[str, Any]


class RefusalPart(Open):
    type: Literal["refusal"]
    refusal: str


UserPart = Annotated[TextPart | ImagePart | AudioPart | FilePart, Field(discriminator="type")]
AssistantPart = Annotated[TextPart | RefusalPart, Field(discriminator="type")]


# -- messages ------------------------------------------------------------------------------


class FunctionCall(Open):
    name: str = Field(min_length=1)
    arguments: str


class ToolCallIn(Open):
    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(Open):
    role: Literal["system", "developer"]
    content: str | list[TextPart]
    name: str | None = None


class UserMessage(Open):
    role: Literal["user"]
    content: str | list[UserPart]
    name: str | None = None


class AssistantMessage(Open):
    role: Literal["assistant"]
    content: str | list[AssistantPart] | None = None
    tool_calls: list[ToolCallIn] | None = None
    refusal: str | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _has_content(self) -> AssistantMessage:
        if self.content is None and not self.tool_calls and self.refusal is None:
            raise ValueError("an assistant message needs content or tool_calls")
        return self


class ToolMessage(Open):
    role: Literal["tool"]
    content: str | list[TextPart]
    tool_call_id: str = Field(min_length=1)


Message = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")
]


# -- tools and formats ---------------------------------------------------------------------


class FunctionDef(Open):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("parameters")
    @classmethod
    def _schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            check_schema(value, "parameters")
        return value


class Tool(Open):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(Strict):
    name: str


class NamedToolChoice(Strict):
    type: Literal["function"]
    function: NamedFunction


class JSONSchemaFormat(Open):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None

    @field_validator("schema_")
    @classmethod
    def _schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            check_schema(value, "schema")
        return value


class ResponseFormat(Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _needs_schema(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs json_schema")
        return self


class StreamOptions(Open):
    include_usage: bool | None = None


# -- chat completions ----------------------------------------------------------------------


class ChatCompletionIn(Open):
    model: str = Field(min_length=1, max_length=256)
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    tools: list[Tool] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = Field(default=None, ge=1, le=1, description="one choice is served")
    user: str | None = Field(default=None, max_length=256)
    metadata: dict[str, str] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    @model_validator(mode="after")
    def _named_tool(self) -> ChatCompletionIn:
        if isinstance(self.tool_choice, NamedToolChoice):
            names = {t.function.name for t in self.tools or []}
            if self.tool_choice.function.name not in names:
                raise ValueError(
                    f"tool_choice names {self.tool_choice.function.name!r}, not among tools"
                )
        return self


# -- embeddings ----------------------------------------------------------------------------


class EmbeddingsIn(Open):
    model: str = Field(min_length=1, max_length=256)
    input: str | list[str] = Field()
    dimensions: int | None = Field(default=None, ge=1, le=65536)
    encoding_format: Literal["float", "base64"] | None = None
    user: str | None = Field(default=None, max_length=256)

    @field_validator("input")
    @classmethod
    def _input(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else value
        if not texts or len(texts) > MAX_INPUTS:
            raise ValueError(f"input takes 1 to {MAX_INPUTS} texts")
        if any(not t for t in texts):
            raise ValueError("an input text is empty")
        return value
