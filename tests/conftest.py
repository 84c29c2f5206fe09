import os
import sys
from pathlib import Path

# The tests import the example's fraud rule to know which events it flags.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "exchange"))
os.environ.setdefault("PYTHONUNBUFFERED", "1")
