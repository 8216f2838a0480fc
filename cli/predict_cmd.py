"""``fractofl predict IMAGE... --endpoint NAME-or-URL``: classify images with an endpoint."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from fractofl.cli.config import load_run_config
from fractofl.serving.client import EndpointClient
from fractofl.serving.errors import EndpointError

HEADER = ("file", "class", "probability", "version")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``predict`` to the ``fractofl`` command."""
    text = "classify SEM images with a local endpoint (URL) or a SageMaker endpoint (name)"
    predict = sub.add_parser("predict", help=text, description=text)
    predict.add_argument(
        "targets",
        nargs="+",
        metavar="IMAGE",
        help="image files (.png .jpg .jpeg .tif .tiff .npy); Hydra overrides key=value may follow",
    )
    predict.add_argument(
        "--endpoint",
        required=True,
        metavar="NAME-or-URL",
        help="http://host:port of `fractofl serve local`, or a SageMaker endpoint name",
    )
    predict.add_argument("--json", action="store_true", help="print the answers as JSON")
    predict.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="environment variable holding the API key (default serving.api_key_env)",
    )
    predict.set_defaults(handler=_predict, cfg=False, overrides=[])


def _predict(args: argparse.Namespace) -> int:
    images = [t for t in args.targets if "=" not in t or Path(t).exists()]
    overrides = [*(t for t in args.targets if t not in images), *args.overrides]
    if not images:
        print("fractofl: error: give at least one IMAGE file", file=sys.stderr)
        return 2
    serving = load_run_config(overrides).serving
    key_env = args.api_key_env or serving.api_key_env
    api_key = os.environ.get(key_env, "") if key_env else ""
    client = EndpointClient(args.endpoint, api_key=api_key or None, region=serving.region)
    results = [_classify(client, Path(image)) for image in images]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        _print_table(results)
        for failed in (r for r in results if "error" in r):
            print(f"fractofl: {failed['file']}: {failed['error']}", file=sys.stderr)
    return 1 if any("error" in r for r in results) else 0


def _classify(client: EndpointClient, image: Path) -> dict[str, Any]:
    try:
        answer = client.predict(image)
    except EndpointError as exc:
        return {"file": str(image), "error": str(exc)}
    return {
        "file": str(image),
        "class": answer.label,
        "probability": answer.probability,
        "probabilities": answer.probabilities,
        "model_version": answer.model_version,
    }


def _print_table(results: list[dict[str, Any]]) -> None:
    rows = [
        (r["file"], "ERROR", "-", "-")
        if "error" in r
        else (r["file"], r["class"], f"{r['probability']:.3f}", r["model_version"])
        for r in results
    ]
    widths = [max(len(row[i]) for row in [HEADER, *rows]) for i in range(len(HEADER))]
    for row in [HEADER, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
