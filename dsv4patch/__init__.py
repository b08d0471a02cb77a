"""Apply the DeepSeek-V4 patch series to vLLM and vllm-ascend trees, safely."""

__version__ = "0.2.0"
