"""Upload the opengemma image to Vertex AI as a custom-container model and deploy it.

    pip install google-cloud-aiplatform
    python deploy/vertex/deploy.py --project P --region us-central1 \\
        --image us-docker.pkg.dev/P/opengemma/opengemma:cpu

Vertex sets AIP_HTTP_PORT, AIP_HEALTH_ROUTE and AIP_PREDICT_ROUTE; the server reads them.
Then: `endpoint.predict(instances=[{"prompt": "Hello", "max_tokens": 32}])`, or chat instances
`{"@requestFormat": "chatCompletions", "messages": [...]}`.
"""

from __future__ import annotations

import argparse

HEALTH_ROUTE = "/ready"  # Vertex health checks: 200 only when loaded and not draining
PREDICT_ROUTE = "/predict"
PORT = 8080


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", required=True)
    parser.add_argument("--region", default="us-central1")
    parser.add_argument("--image", required=True, help="the pushed opengemma image")
    parser.add_argument("--model", default=None, help="OPENGEMMA_MODEL (hf://... or gs://...)")
    parser.add_argument("--machine-type", default="n2-standard-8")
    parser.add_argument("--accelerator-type", default=None, help="e.g. NVIDIA_L4")
    args = parser.parse_args()

    from google.cloud import aiplatform

    aiplatform.init(project=args.project, location=args.region)
    env = {"OPENGEMMA_DRAIN_TIMEOUT": "60"}
    if args.model:
        env["OPENGEMMA_MODEL"] = args.model
    model = aiplatform.Model.upload(
        display_name="opengemma",
        serving_container_image_uri=args.image,
        serving_container_health_route=HEALTH_ROUTE,
        serving_container_predict_route=PREDICT_ROUTE,
        serving_container_ports=[PORT],
        serving_container_environment_variables=env,
    )
    endpoint = model.deploy(
        machine_type=args.machine_type,
        accelerator_type=args.accelerator_type,
        accelerator_count=1 if args.accelerator_type else 0,
        min_replica_count=1,
        max_replica_count=2,
    )
    print(
        endpoint.predict(
            instances=[
                {"prompt": "The capital of France is", "max_tokens": 16, "raw_response": True}
            ]
        )
    )


if __name__ == "__main__":
    main()
