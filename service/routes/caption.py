"""Captions of uploaded images, written by BLIP."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from models.blip import CaptionOptions, Decoding
from service.auth import ReadKey
from service.deps import CaptionerDep, SettingsDep
from service.inputs import check_text, read_uploads
from service.schemas import CaptionOut, CaptionResponse

router = APIRouter(prefix="/v1", tags=["caption"], dependencies=[ReadKey])


@router.post("/caption", response_model=CaptionResponse)
async def caption(
    captioner: CaptionerDep,
    settings: SettingsDep,
    files: Annotated[list[UploadFile], File(description="one or more image files")],
    max_new_tokens: Annotated[int, Form(ge=1, le=256, description="longest caption, in tokens")] = 30,
    decoding: Annotated[Decoding, Form(description="beam search, or sampling (varies between calls)")] = Decoding.BEAM,
    num_beams: Annotated[int, Form(ge=1, le=16, description="beams, with beam search")] = 3,
    temperature: Annotated[float, Form(gt=0, le=10, description="with sampling: higher is more varied")] = 1.0,
    top_p: Annotated[float, Form(gt=0, le=1, description="with sampling: nucleus probability mass")] = 0.9,
    prompt: Annotated[str | None, Form(description='text for the caption to continue, e.g. "a photography of"')] = None,
) -> CaptionResponse:
    """A caption for each image (503 unless the server runs with --captioner)."""
    if prompt is not None:
        check_text(prompt, "prompt", settings.limits)
    options = CaptionOptions(
        max_new_tokens=max_new_tokens,
        decoding=decoding,
        num_beams=num_beams,
        temperature=temperature,
        top_p=top_p,
        prompt=prompt.strip() if prompt else None,
    )
    captioner.check(options)  # a prompt too long for the model is refused before any decoding
    uploads = await read_uploads(files, settings.limits)
    captions = await captioner.caption(uploads, options)
    return CaptionResponse(
        model=captioner.info.spec,
        captions=[CaptionOut(file=name, caption=text) for (name, _), text in zip(uploads, captions, strict=True)],
    )
