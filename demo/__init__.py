"""The demo models: a scene generator, and the training and evaluation of the demo CLIP and BLIP models.

The runtime never imports this package (the bundled weights load like any
checkpoint); it is not installed with the service. Run it from a checkout:
`python -m demo.train_clip`, `python -m demo.eval_clip`, ... (docs/demo-model.md).
"""
