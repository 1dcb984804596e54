# The reference implementation's pinned versions, shared by every script that builds the
# reference venv (sourced, not run). Fixtures are only meaningful with the versions that made them.
REF_PINS=(
  "torch==2.15.0"
  "transformers==5.24.0"
  "tokenizers==0.23.3"
  "safetensors==0.8.0"
  "numpy==2.4.6"
  "scipy==1.17.1"
  "soundfile==0.14.0"
  "Jinja2==3.1.6"
)
