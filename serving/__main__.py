"""``python -m serving --model_name m --model_base_path /models/m --rest_api_port 8501``."""

from .server import main

if __name__ == "__main__":
    raise SystemExit(main())
