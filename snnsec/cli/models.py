"""``snnsec models``: list the model registry."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("models", help="list the registered model architectures")
    p.set_defaults(func=run)


def run(args) -> None:
    from snnsec.models import describe

    entries = describe()
    width = max(len(name) for name, _ in entries)
    for name, text in entries:
        print(f"{name:<{width}}  {text}")
    print("\nUser architectures: pass 'package.module:function' as the model name (see `snnsec.models` docs).")
