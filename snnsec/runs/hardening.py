"""One hardening experiment end to end: data -> recipe -> training -> accuracy at t <= T, robust accuracy, ASR.

The ``hardening`` bench kind calls :func:`run_hardening`; so can scripts. Metric names:

- ``accuracy_at_t<t>``: accuracy on the first ``t`` time steps (``t = T`` included);
  ``clean_accuracy`` is the one at ``T``;
- ``robust_accuracy_eps<k>/255``: worst case per sample over the adversarial evaluator's
  ``attacks`` at that L-inf eps, on the first ``robust_n`` test samples, and
  ``robust_reliable`` (1.0 when the evaluator's integrity checklist passed);
- with ``backdoor`` set (training data poisoned by the backdoor engineer's wrapper):
  ``attack_success_rate`` (non-target test samples only) and ``backdoor_robust_accuracy``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch

from snnsec.hardening.settings import parse_eps
from snnsec.hardening.evaluate import accuracy_at_steps, eps_label
from snnsec.hardening.recipe import Recipe, build_recipe


@dataclass
class HardeningConfig:
    dataset: str = "ndigits"
    root: str | None = None
    T: int = 8
    slicing: str = "events"
    model: str = "csnn"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] | str = "ce"
    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    steps: list[int] = field(default_factory=lambda: [1, 2, 4])
    eps: list[float] = field(default_factory=list)
    # FGSM + PGD-20 (the evaluator's full strength) keep a CPU budget; add "apgd" for stronger numbers
    attacks: list[str] = field(default_factory=lambda: ["fgsm", "pgd"])
    # gradient estimators of the white-box attacks (None: the model's own surrogate); e.g.
    # ["model", "assg:0.43"] adds ASSG, which lowered csnn's worst case most (attacks/README.md)
    gradients: list[str] | None = None
    robust_n: int | None = 100
    # backdoor resilience: {"trigger": "static", "rate": 0.1, "target": 0, ...} (BackdoorConfig fields)
    backdoor: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.recipe = build_recipe(self.recipe, source="hardening config").to_dict()
        self.eps = [parse_eps(e) for e in self.eps]
        if self.gradients is not None:
            from snnsec.attacks.adversarial.gradients import parse_gradient

            self.gradients = [str(g) for g in self.gradients]
            for g in self.gradients:
                parse_gradient(g)  # a misspelt estimator fails here, before the training

    @classmethod
    def from_cell(cls, cell: dict[str, Any]) -> "HardeningConfig":
        """Flat bench cell -> config. Keys that are recipe fields (``tau``, ``adv_eps``, ...) refine ``recipe``."""
        names = {f.name for f in fields(cls)} - {"recipe"}
        recipe_names = {f.name for f in fields(Recipe)}
        unknown = sorted(set(cell) - names - recipe_names - {"kind", "recipe"})
        if unknown:
            raise ValueError(f"hardening cell: unknown field(s) {unknown}; expected config fields {sorted(names | {'recipe'})} "
                             f"or recipe fields {sorted(recipe_names)}")
        rec = build_recipe(cell.get("recipe", "ce"), source="hardening cell").to_dict()
        rec.update({k: v for k, v in cell.items() if k in recipe_names})
        return cls(recipe=rec, **{k: v for k, v in cell.items() if k in names})

    @property
    def recipe_obj(self) -> Recipe:
        return build_recipe(self.recipe)


@dataclass
class HardeningResult:
    model: torch.nn.Module
    spec: Any
    config: HardeningConfig
    metrics: dict[str, float]
    history: Any

    def defense_params(self) -> dict[str, Any]:
        return {"recipe": self.config.recipe}


def robust_accuracy(model, x: torch.Tensor, y: torch.Tensor, eps: list[float], *, attacks=("fgsm", "pgd"), gradients=None,
                    seed: int = 0, checks: bool = True, progress: bool = False) -> dict[str, float]:
    """Robust accuracy at each eps through the adversarial evaluator (:func:`snnsec.attacks.adversarial.evaluate`),
    white-box attacks through each of ``gradients`` (None: the model's own surrogate).

    Returns ``{"robust_accuracy_eps<k>/255": per-sample worst case over ``attacks``}`` plus
    ``robust_reliable`` (1.0 when the evaluator's integrity checklist passed, else 0.0).
    """
    from snnsec.attacks.adversarial import EvalConfig, evaluate

    ev = evaluate(model, x, y, EvalConfig(attacks=tuple(attacks), eps=tuple(eps), seed=seed, checks=checks,
                                          gradients=None if gradients is None else tuple(gradients)),
                  progress=progress)
    out = {f"robust_accuracy_eps{eps_label(e)}": float(a) for e, a in ev.robust_accuracy.items()}
    if checks:
        out["robust_reliable"] = float(ev.reliable)
    return out


def run_hardening(config: HardeningConfig, *, progress: bool = True, device: str = "cpu") -> HardeningResult:
    from snnsec.data import frames_and_labels
    from snnsec.train import TrainConfig, prepare, seed_everything, train

    seed_everything(config.seed)
    recipe = config.recipe_obj
    setup = prepare(config.dataset, config.model, root=config.root, model_kwargs=config.model_kwargs, T=config.T,
                    slicing=config.slicing, device=device)
    train_ds, test_ds, spec, model = setup.train_ds, setup.test_ds, setup.spec, setup.model
    T = spec.frame_shape[0]
    K = spec.num_classes
    loss_fn = recipe.build(model)

    poison, bd_cfg = None, None
    if config.backdoor:
        from snnsec.attacks.backdoor.run import BackdoorConfig, build_trigger
        from snnsec.attacks.backdoor.triggers import trigger_class

        bd_cfg = BackdoorConfig.from_cell({"dataset": config.dataset, "T": config.T, "seed": config.seed, **config.backdoor})
        trigger = build_trigger(bd_cfg, frames_and_labels(train_ds)[0] if trigger_class(bd_cfg.trigger).needs_fit else None)
        poison = bd_cfg.poison(train_ds, trigger, K)

    tcfg = TrainConfig(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr, seed=config.seed)
    history = train(model, train_ds, None, tcfg, progress=progress, loss_fn=loss_fn,
                    batch_transform=poison.batch_transform if poison is not None else None)
    model.eval()

    x_test, y_test = frames_and_labels(test_ds)
    acc = accuracy_at_steps(model, x_test, y_test, config.steps)
    metrics = {f"accuracy_at_t{t}": a for t, a in acc.items()}
    metrics["clean_accuracy"] = acc[T]
    if config.eps:
        n = len(x_test) if config.robust_n is None else min(int(config.robust_n), len(x_test))
        metrics.update(robust_accuracy(model, x_test[:n], y_test[:n], list(config.eps), attacks=config.attacks,
                                       gradients=config.gradients, seed=config.seed, progress=progress))
    if poison is not None:
        from snnsec import metrics as m
        from snnsec.attacks.backdoor.poison import poison_label
        from snnsec.attacks.backdoor.run import apply_to_test
        from snnsec.train import predict

        pred = predict(model, apply_to_test(poison.trigger, test_ds, x_test, bd_cfg.inject)).argmax(1)
        target = poison_label(y_test, bd_cfg.target, bd_cfg.mode, K)
        metrics["attack_success_rate"] = m.attack_success_rate(pred, y_test, target)
        metrics["backdoor_robust_accuracy"] = m.backdoor_robust_accuracy(pred, y_test, target)
    return HardeningResult(model=model, spec=spec, config=config, metrics=metrics, history=history)
