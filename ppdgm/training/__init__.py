"""Training any model: the loop (:mod:`~ppdgm.training.loop`, public as :mod:`ppdgm.train`),
checkpoints (:mod:`~ppdgm.training.checkpoint`, public as :mod:`ppdgm.checkpoint`), pictures
of training (:mod:`~ppdgm.training.plots`) and probability density distillation
(:mod:`~ppdgm.training.distill`)."""
