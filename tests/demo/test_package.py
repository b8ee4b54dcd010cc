from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_service_loading_the_demo_models_never_imports_the_demo_package():
    # A fresh interpreter: this test process has imported the demo package already.
    script = (
        "import json, sys\n"
        "from models.blip import load_captioner, load_itm\n"
        "from models.clip import load_clip\n"
        "import service.app\n"
        "load_clip('demo', None, 'cpu', fallback_to_demo=False)\n"
        "load_captioner('demo', device='cpu')\n"
        "load_itm('demo', device='cpu')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m == 'demo' or m.startswith('demo.'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == []
