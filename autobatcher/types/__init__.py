"""Response models: attrs mirrors of the openai SDK's types, without the openai dependency.

Every model is built from the server's parsed JSON with ``Model.from_dict(data)`` and
offers SDK-style attribute access (``completion.choices[0].message.content``), unknown
fields (``obj.new_field``, ``obj.model_extra``) and the server's JSON back
(``to_dict()``, ``model_dump()``, ``model_dump_json()``). See ``_base`` for the design.
"""

from ._base import BaseModel, GenericObject
from ._batches import (
    Batch,
    BatchError,
    BatchErrors,
    BatchRequestCounts,
    BatchUsage,
    InputTokensDetails,
    OutputTokensDetails,
)
from ._chat import (
    Annotation,
    AnnotationURLCitation,
    ChatCompletion,
    ChatCompletionAudio,
    ChatCompletionMessage,
    ChatCompletionMessageCustomToolCall,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageToolCall,
    ChatCompletionMessageToolCallUnion,
    ChatCompletionTokenLogprob,
    Choice,
    ChoiceLogprobs,
    CompletionTokensDetails,
    CompletionUsage,
    Custom,
    Function,
    FunctionCall,
    PromptTokensDetails,
    TopLogprob,
)
from ._completions import Completion, CompletionChoice, Logprobs
from ._embeddings import CreateEmbeddingResponse, Embedding, EmbeddingUsage
from ._files import FileDeleted, FileObject
from ._moderations import (
    Categories,
    CategoryAppliedInputTypes,
    CategoryScores,
    Moderation,
    ModerationCreateResponse,
)
from ._responses import (
    IncompleteDetails,
    ReasoningText,
    Response,
    ResponseCustomToolCall,
    ResponseError,
    ResponseFunctionToolCall,
    ResponseOutputItem,
    ResponseOutputMessage,
    ResponseOutputRefusal,
    ResponseOutputText,
    ResponseReasoningItem,
    ResponseUsage,
)

__all__ = [
    "Annotation",
    "AnnotationURLCitation",
    "BaseModel",
    "Batch",
    "BatchError",
    "BatchErrors",
    "BatchRequestCounts",
    "BatchUsage",
    "Categories",
    "CategoryAppliedInputTypes",
    "CategoryScores",
    "ChatCompletion",
    "ChatCompletionAudio",
    "ChatCompletionMessage",
    "ChatCompletionMessageCustomToolCall",
    "ChatCompletionMessageFunctionToolCall",
    "ChatCompletionMessageToolCall",
    "ChatCompletionMessageToolCallUnion",
    "ChatCompletionTokenLogprob",
    "Choice",
    "ChoiceLogprobs",
    "Completion",
    "CompletionChoice",
    "CompletionTokensDetails",
    "CompletionUsage",
    "CreateEmbeddingResponse",
    "Custom",
    "Embedding",
    "EmbeddingUsage",
    "FileDeleted",
    "FileObject",
    "Function",
    "FunctionCall",
    "GenericObject",
    "IncompleteDetails",
    "InputTokensDetails",
    "Logprobs",
    "Moderation",
    "ModerationCreateResponse",
    "OutputTokensDetails",
    "PromptTokensDetails",
    "ReasoningText",
    "Response",
    "ResponseCustomToolCall",
    "ResponseError",
    "ResponseFunctionToolCall",
    "ResponseOutputItem",
    "ResponseOutputMessage",
    "ResponseOutputRefusal",
    "ResponseOutputText",
    "ResponseReasoningItem",
    "ResponseUsage",
    "TopLogprob",
]
