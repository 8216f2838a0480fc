"""Run an extracted artifact under the SageMaker PyTorch inference toolkit, in-process.

Usage: ``python toolkit_driver.py MODEL_DIR REQUESTS.json`` where the JSON is a list of
``{"file": path, "content_type": ..., "accept": ..., "headers": {...}}`` (headers
optional); prints one JSON object with the
status, content type and body of each reply, and which modules served them.

It does what a TorchServe worker in the SageMaker PyTorch container does, minus the
Java front end and the socket: ``code/`` first on the import path (the container sets
PYTHONPATH to it), then the toolkit's ``HandlerService.initialize(context)`` and one
``handle([{"body": bytearray}], context)`` per request, with TorchServe's own ``Context`` and
``RequestProcessor`` (the package ``torchserve``) carrying the request headers and
receiving the reply's status and content type. A fresh interpreter, so that the
artifact's vendored ``fractofl`` is imported rather than the installed one.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path


def main(model_dir: str, requests_file: str) -> None:
    logging.basicConfig(level=logging.INFO)  # as the TorchServe worker logs
    sys.path.insert(0, str(Path(model_dir) / "code"))
    from sagemaker_pytorch_serving_container.handler_service import HandlerService
    from ts.context import Context, RequestProcessor

    context = Context("model", model_dir, None, 1, None, "0.12.0")
    service = HandlerService()
    service.initialize(context)
    replies = []
    for request in json.loads(Path(requests_file).read_text()):
        headers = {"Content-Type": request["content_type"], "Accept": request["accept"]}
        headers.update(request.get("headers", {}))
        context.request_processor = [RequestProcessor(headers)]
        body = bytearray(Path(request["file"]).read_bytes())  # TorchServe hands a bytearray
        (answer,) = service.handle([{"body": body}], context)
        status, _ = context.get_response_status(0)
        replies.append(
            {
                "status": status,
                "content_type": context.get_response_content_type(0),
                "body": answer.decode() if isinstance(answer, bytes) else str(answer),
            }
        )
    served_by = {
        name: str(getattr(sys.modules.get(name), "__file__", None))
        for name in (
            "inference",
            "fractofl.core.model.architectures",
            "fractofl.core.images.preprocessing",
            "ecdsa",
        )
    }
    heavy = sorted(
        {n.split(".")[0] for n in sys.modules} & {"flwr", "hydra", "omegaconf", "cryptography"}
    )
    print(json.dumps({"replies": replies, "served_by": served_by, "heavy_modules": heavy}))


if __name__ == "__main__":
    main(*sys.argv[1:])
