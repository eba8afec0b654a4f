"""ControlVideo (Zhao, Wang, Bao, Li, Zhu 2023): text-driven editing of real video clips with a
text-to-image diffusion model and a ControlNet, made temporally consistent by key-frame
attention, temporal attention and one-shot tuning on the source clip.

- :mod:`.attention`: key-frame / fully cross-frame attention processors and temporal attention
  for diffusers UNets and ControlNets (:func:`inflate`), the tuned-parameter selection;
- :mod:`.pipeline`: a model folder (:class:`VideoEditModel`), one-shot tuning, DDIM inversion
  and guided editing (:func:`edit_clip`);
- :mod:`.video`, :mod:`.controls`, :mod:`.text`: clips in and out, control maps, prompt encoders;
- :mod:`.metrics`: warping error (flow of the source clip), frame consistency, edge F1;
- :mod:`.cli`: ``python -m vision edit-video``.

diffusers is imported only when a model is built or loaded.
"""

from .attention import ATTENTION_MODES, inflate, set_num_frames, trainable_parameters
from .controls import CONTROLS, control_maps
from .metrics import edge_f1, frame_consistency, warping_error
from .pipeline import (
    ControlledUNet,
    EditConfig,
    SourceClip,
    VideoEditModel,
    edit_clip,
    edit_source,
    load_tuned,
    prepare_source,
    save_tuned,
    tune,
)
from .text import WordTextEncoder
from .video import read_video, sample_clips, write_gif, write_mp4, write_strip

__all__ = [
    "ATTENTION_MODES",
    "CONTROLS",
    "ControlledUNet",
    "EditConfig",
    "SourceClip",
    "VideoEditModel",
    "WordTextEncoder",
    "control_maps",
    "edge_f1",
    "edit_clip",
    "edit_source",
    "load_tuned",
    "prepare_source",
    "save_tuned",
    "frame_consistency",
    "inflate",
    "read_video",
    "sample_clips",
    "set_num_frames",
    "trainable_parameters",
    "tune",
    "warping_error",
    "write_gif",
    "write_mp4",
    "write_strip",
]
