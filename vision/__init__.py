"""anneal.vision: image applications on ``core``.

- :mod:`vision.generation`: train, sample and evaluate any family (DDPM, rectified flow,
  reflow, consistency distillation) on any backbone (U-Net, U-ViT, DiT) on real images
  (Fashion-MNIST, the OpenCV digits);
- :mod:`vision.egsde`: unpaired image-to-image translation by energy-guided SDEs (EGSDE), with
  SDEdit and ILVR run by the same code, its metrics and benchmark;
- :mod:`vision.controlvideo`: text-driven video editing with ControlVideo (key-frame and temporal
  attention for diffusers UNets / ControlNets, DDIM inversion, one-shot tuning) and its metrics;
- :mod:`vision.classifier`: the feature classifier behind ``fid_fmnist`` / ``fid_digits``;
- :mod:`vision.demo`: the package's stage of the main job.

Command line: ``python -m vision {train,sample,evaluate,translate,edit-video,benchmark,demo} --help``.
"""
