"""Zero-shot classification of an image over given labels."""

from __future__ import annotations

from collections import Counter
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile

from service.auth import ReadKey
from service.deps import EncoderDep, SettingsDep
from service.errors import ApiError
from service.inputs import check_text, read_uploads
from service.schemas import ClassifyResponse, LabelOut

router = APIRouter(prefix="/v1", tags=["classify"], dependencies=[ReadKey])


@router.post("/classify", response_model=ClassifyResponse)
async def classify(
    request: Request,
    encoder: EncoderDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="the image to classify")],
    labels: Annotated[list[str], Form(description="candidate labels; repeat the field for each")],
    template: Annotated[str, Form(description="prompt template; {} is replaced by the label")] = "a photo of a {}.",
) -> ClassifyResponse:
    """Each label's probability (softmax over CLIP logits with the model's logit scale), best first.

    Labels must be distinct: a repeated label would take two shares of the probability.
    """
    limits = settings.limits
    if len(labels) > limits.max_labels:
        raise ApiError(422, "validation_error", f"{len(labels)} labels; at most {limits.max_labels}")
    for label in labels:
        check_text(label, "a label", limits)
    repeated = [label for label, n in Counter(labels).items() if n > 1]
    if repeated:
        raise ApiError(422, "validation_error", f"labels must be distinct; given more than once: {repeated[:10]}")
    # FastAPI binds the first `file` part; a second would be silently ignored. The form is parsed already.
    if len((await request.form()).getlist("file")) > 1:
        raise ApiError(422, "validation_error", "classify takes one image: send a single `file` part")
    if "{}" not in template:
        raise ApiError(422, "validation_error", "template must contain {} where the label goes")
    check_text(template, "template", limits)
    uploads = await read_uploads([file], limits)
    ranked = await encoder.classify(uploads[0], labels, template)
    return ClassifyResponse(labels=[LabelOut(label=r.label, probability=r.probability, score=r.score) for r in ranked])
