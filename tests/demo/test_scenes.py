"""The synthetic scenes the demo models are trained and measured on (demo/scenes.py)."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import numpy as np

from demo.scenes import (
    CENTRED_ABOVE,
    HELD_OUT_COMBOS,
    LONE_LARGE_MAX,
    SCALES,
    SHAPES,
    Description,
    Mention,
    Scene,
    SceneObject,
    describe,
    perturb,
    render,
    scene_set,
    varied_set,
    with_shape,
)


def test_scene_sets_are_the_same_in_every_process_whatever_the_string_hash_seed():
    script = (
        "from demo.scenes import HELD_OUT_COMBOS, scene_set, varied_set\n"
        "print([s.caption() for s in scene_set(7, 20, require=HELD_OUT_COMBOS)])\n"
        "print([s.caption() for s in varied_set(7, 20, require=HELD_OUT_COMBOS)])\n"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outputs) == 1


def test_varied_scenes_keep_each_size_word_to_its_range_and_huge_lone_shapes_in_the_centre():
    lone = varied_set(11, 300, objects=1)
    for scene in lone + varied_set(12, 300):
        for obj in scene.objects:
            assert obj.scale is not None
            low, high = SCALES[obj.size]
            if len(scene.objects) == 1 and obj.size == "large":
                high = LONE_LARGE_MAX
            assert low <= obj.scale <= high, (obj, len(scene.objects))
            if obj.scale > CENTRED_ABOVE:
                assert obj.position == "centre"
    assert max(s.objects[0].scale or 0 for s in lone) > 0.4  # a lone shape can nearly fill the picture
    assert {s.canvas for s in lone} == {48, 64, 96, 128, 192, 256}
    assert any(s.gradient is not None for s in lone) and any(s.gradient is None for s in lone)


def test_a_scene_is_drawn_at_its_canvas_and_a_huge_shape_stays_whole_inside_it():
    scene = Scene((SceneObject("square", "red", "large", "left", 0.45),), (0, 0, 0), False, 1, canvas=96)
    image = np.asarray(render(scene))
    assert image.shape == (96, 96, 3)
    red = (image[..., 0] > 128) & (image[..., 1] < 100)
    rows, cols = np.nonzero(red)
    # A square of half-side 0.85 * radius, kept inside the picture: not cut by any edge.
    assert rows.min() > 0 and cols.min() > 0 and rows.max() < 95 and cols.max() < 95
    assert 0.7 * 96 < cols.max() - cols.min() < 0.8 * 96


def test_copies_in_each_shape_differ_only_in_that_object():
    scene = varied_set(5, 1, objects=3)[0]
    copies = [with_shape(scene, 1, shape) for shape in SHAPES]
    for copy in copies:
        assert [o for i, o in enumerate(copy.objects) if i != 1] == [o for i, o in enumerate(scene.objects) if i != 1]
        assert (copy.background, copy.gradient, copy.noisy, copy.seed, copy.canvas) == (
            scene.background,
            scene.gradient,
            scene.noisy,
            scene.seed,
            scene.canvas,
        )
    assert len({c.caption() for c in copies}) == 4
    assert len({render(c).tobytes() for c in copies}) == 4


def test_a_description_is_true_of_its_scene_and_a_full_one_is_not_true_of_a_near_copy():
    rng = random.Random(3)
    for scene in varied_set(9, 100, exclude=HELD_OUT_COMBOS):
        full = describe(scene, rng, full=True)
        assert full.complete and full.holds_for(scene)
        assert not full.holds_for(perturb(scene, rng, exclude=HELD_OUT_COMBOS))
        assert describe(scene, rng).holds_for(scene)
        index = rng.randrange(len(scene.objects))
        about = describe(scene, rng, full=False, about=index)
        assert about.holds_for(scene)
        assert scene.objects[index].shape in about.text


def test_a_partial_description_is_true_of_any_scene_holding_its_objects_one_object_each():
    red_circle = Description("a red circle", (Mention("circle", "red", None, None),), complete=False)
    two_red = Description(
        "a red circle and a red shape", (Mention("circle", "red", None, None), Mention(None, "red", None, None)), False
    )
    one = Scene((SceneObject("circle", "red", "small", "left"),), (0, 0, 0), False, 1)
    both = Scene((*one.objects, SceneObject("star", "red", "large", "top")), (0, 0, 0), False, 1)
    other = Scene((SceneObject("circle", "blue", "small", "left"),), (0, 0, 0), False, 1)
    assert red_circle.holds_for(one) and red_circle.holds_for(both) and not red_circle.holds_for(other)
    assert two_red.holds_for(both) and not two_red.holds_for(one)  # one object cannot be both mentions


def test_the_first_scenes_are_unchanged_by_the_varied_range():
    # random_scene draws no scale, fade or canvas: figures first measured on these sets stay comparable.
    for scene in scene_set(1_000_003, 50):
        assert scene.canvas == 64 and scene.gradient is None
        assert all(o.scale is None for o in scene.objects)
        assert render(scene).size == (64, 64)
