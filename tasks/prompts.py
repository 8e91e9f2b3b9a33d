"""The CoRT prompt: one user message, no system prompt, rendered with the model's chat template."""

COT_INSTRUCTION = (
    "\nPlease integrate natural language reasoning with python programs to solve the problem above, "
    "and put your final answer within \\boxed{}."
)
# Prompt-Hint models get this right after <think> (the start of the assistant's turn).
PROMPT_HINT = "Okay, let's try to solve this problem step by step using multiple python code calls"
# Makes small models (SmolLM2) write code at all: the turn opens inside a python block.
CODE_HINT = "```python\n"
# Hint-Engineering's hints (inserted where a model delays computation / distrusts a result).
DELAYED_CODE_HINT = "It looks tedious, and we can use python code to simplify the reasoning."
DISTRUST_HINT = "We don't need to doubt the accuracy of python calculations."
# Ends the interpreter output of the last allowed tool call (CoRT's text, verbatim).
TOOL_LIMIT_MESSAGE = (
    "\n\n[SYSTEM]\nYou have exceeded the allowed number of code executions. You can no longer write or "
    "run code. Please continue solving the problem using your reasoning and analytical skills."
)


def user_message(problem: str, instruction: str = COT_INSTRUCTION) -> list[dict[str, str]]:
    return [{"role": "user", "content": problem + instruction}]
