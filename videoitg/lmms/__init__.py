"""lmms-eval integration: a task's requests as a batch manifest (`tasks`), and `lmms-eval --model videoitg`
(`model`, needs the `lmms` extra)."""


def entry_point():
    """The `lmms_eval.models` entry point: lmms-eval (>= 0.7) registers `--model videoitg` from this."""
    from lmms_eval.models.registry_v2 import ModelManifest

    from videoitg.lmms.tasks import MODEL_NAME

    return ModelManifest(model_id=MODEL_NAME, simple_class_path="videoitg.lmms.model.VideoITGModel")
