"""OpenAI's request and response bodies (pydantic): embeddings, classify, completions, chat
completions, models, errors; and the protocol's defaults (``max_tokens``, list bounds).

``input`` is one string or a non-empty list of non-empty strings; every response lists one entry per
input with its ``index`` (position in ``input``). Error bodies are built by ``openai.errors``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Most items in one list of a request body, checked before the fields are validated (validating
# 1.6 million list items took seconds on the event loop). The configured limits
# (--max-inputs-per-request, --max-queue) are lower and give 413 later; this one only bounds
# the validation work of a body that could never be admitted.
MAX_LIST_ITEMS = 1 << 16
MAX_PROMPT_IDS = 1 << 17  # token ids in one prompt: more than any context window


class TooManyItems(Exception):
    """A list in the body is longer than the schema lets through (HTTP 413)."""

    def __init__(self, field: str, count: int, limit: int):
        super().__init__(f"'{field}' holds {count} items; at most {limit} are accepted in one request")
        self.field = field


def _bounded(data: Any, fields: tuple[str, ...]) -> Any:
    """Raise TooManyItems for an over-long list in ``fields``, or token-id list inside one."""
    if isinstance(data, dict):
        for name in fields:
            value = data.get(name)
            if isinstance(value, list):
                if len(value) > MAX_LIST_ITEMS:
                    raise TooManyItems(name, len(value), MAX_LIST_ITEMS)
                for i, inner in enumerate(value):
                    if isinstance(inner, list) and len(inner) > MAX_PROMPT_IDS:
                        raise TooManyItems(f"{name}.{i}", len(inner), MAX_PROMPT_IDS)
    return data


class BoundedBody(BaseModel):
    """A request body whose lists are length-checked before any field is validated."""

    @model_validator(mode="before")
    @classmethod
    def _check_sizes(cls, data: Any) -> Any:
        return _bounded(data, ("input", "prompt", "messages", "stop"))


# An empty list or an empty text is refused by the route with 400 (``requests.embedding_inputs``),
# not here: a union's validation error would name the wrong branch ("should be a valid string").
Inputs = Annotated[str | list[str], Field(
    description="one text, or a non-empty list of texts (one result each, same order); no empty text")]
MODEL_FIELD = ("any name when the server has no --served-model-name (the served model answers and the "
               "response names it); else one of those names")


class EmbeddingRequest(BoundedBody):
    """POST /v1/embeddings. Unknown fields (``user``) are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    input: Inputs
    model: str = Field(default="", description=MODEL_FIELD)
    encoding_format: Literal["float", "base64"] = Field(
        default="float", description="base64: the little-endian float32 bytes of each vector, base64-encoded")
    dimensions: int | None = Field(default=None, ge=1, description="Matryoshka models only: the first "
                                   "`dimensions` values, renormalised; other models answer 400")


class ClassifyRequest(BoundedBody):
    """POST /v1/classify."""

    model_config = ConfigDict(extra="ignore")

    input: Inputs
    model: str = Field(default="", description=MODEL_FIELD)


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="floats, or a base64 string of float32 LE bytes")


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class Classification(BaseModel):
    """One input's result: ``label`` and ``score`` for a classifier, plus whatever else the model returns."""

    model_config = ConfigDict(extra="allow")

    index: int
    label: str | bool | int | float | None = None  # the model's label, of the type it was trained with
    score: float | None = None


class ClassifyResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Classification]
    model: str
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "parainfer"
    task: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


# ---- generation (--task generate): OpenAI's completions and chat completions ----------------

MAX_STOP_STRINGS = 16  # each is searched at every step of the sequence (OpenAI allows 4)
MAX_CHOICES = 16  # most choices (``n``) per prompt: each is its own sequence in the engine (OpenAI allows 128)
CHAT_DEFAULT_MAX_TOKENS = 256  # chat without max_tokens: this many, or the rest of the context window if less
COMPLETION_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions

Prompt = Annotated[str | Annotated[list[str], Field(min_length=1)] | Annotated[list[int], Field(min_length=1)]
                   | Annotated[list[Annotated[list[int], Field(min_length=1)]], Field(min_length=1)], Field(
    description="one text, a list of texts (one choice each), token ids, or a list of token-id lists")]


class SamplingFields(BoundedBody):
    """The sampling fields both generation routes share (OpenAI's names and defaults, except
    ``max_tokens``: 16 for completions as OpenAI's, 256 for chat). Unknown fields are ignored;
    fields that ask for something not supported (``echo``, ``n`` over MAX_CHOICES) get 400."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(default="", description=MODEL_FIELD)
    max_tokens: int | None = Field(default=None, ge=1, description="most tokens to generate")
    temperature: float = Field(default=1.0, ge=0, le=2, description="0 = greedy")
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: int = Field(default=0, description="vLLM's extension: keep the k most likely tokens; 0 or -1 keeps all "
                       "(other negatives get 400)")
    seed: int | None = Field(default=None, ge=-(2**63), le=2**64 - 1, description="seeds this request's "
                             "sampler (same seed, same text); 64 bits, what torch.Generator takes")
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP_STRINGS)] | None = Field(
        default=None, description=f"strings that end the text (not included); at most {MAX_STOP_STRINGS}")
    stream: bool = False
    stream_options: dict[str, Any] | None = Field(default=None, description='{"include_usage": true} adds a '
                                                  "last chunk with usage")
    ignore_eos: bool = Field(default=False, description="keep going past the end-of-sequence token (vLLM's "
                             "extension; benchmarks use it for fixed output lengths)")
    n: int = Field(default=1, description=f"choices per prompt, 1..{MAX_CHOICES}, each its own sequence; with "
                   "`seed`, choice i samples with seed + i")
    logprobs: Any = Field(default=None, description="chat: true/false; completions: how many top logprobs "
                          "per token (0..20)")
    user: str | None = None
    response_format: dict[str, Any] | None = Field(default=None, description='{"type": "json_object"} or '
                                                   '{"type": "json_schema", "json_schema": {"name": ..., '
                                                   '"schema": {...}}}: output constrained to JSON / the schema')


class CompletionRequest(SamplingFields):
    """POST /v1/completions."""

    prompt: Prompt
    echo: bool = False


class ChatMessage(BaseModel):
    """One chat message; ``content`` is a string or a list of ``{"type": "text", "text": ...}`` parts."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[dict[str, Any]] | None = Field(default=None, description="an assistant's earlier tool calls")
    tool_call_id: str | None = Field(default=None, description="a tool message: the call it answers")
    name: str | None = None


class ChatCompletionRequest(SamplingFields):
    """POST /v1/chat/completions."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: int | None = Field(default=None, ge=1, description="newer name of max_tokens")
    top_logprobs: Any = Field(default=None, description="0..20 most likely tokens per position (needs logprobs)")
    tools: list[dict[str, Any]] | None = Field(default=None, description='[{"type": "function", "function": '
                                               '{"name", "description", "parameters": JSON schema}}]')
    tool_choice: str | dict[str, Any] | None = Field(default=None, description='"none", "auto" (default with '
                                                     'tools), "required", or {"type": "function", "function": '
                                                     '{"name": ...}}')
    parallel_tool_calls: bool | None = Field(default=None, description="accepted; at most one call is made")


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: dict[str, Any] | None = None
    finish_reason: Literal["stop", "length"] | None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[dict[str, Any]] | None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: dict[str, Any] | None = None
    finish_reason: Literal["stop", "length", "tool_calls"] | None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: CompletionUsage


class ResponsesRequest(BoundedBody):
    """POST /v1/responses, the minimal subset: ``input`` (a string, or messages whose content is
    a string or ``input_text`` / ``output_text`` parts), ``instructions`` (a system message
    first), ``max_output_tokens``, ``temperature``, ``top_p``; answered through the chat
    completions path (``requests.chat_request_of``). Other fields are ignored; ``stream`` is 400."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(default="", description=MODEL_FIELD)
    input: str | Annotated[list[dict[str, Any]], Field(min_length=1)]
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    stream: bool = False
