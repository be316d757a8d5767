"""Instruction tuning: chat template (``templates``), answer-only loss masking and packing (``sft``),
LoRA via PEFT (``lora``), and the tune stage comparing full fine-tuning with LoRA (``stage``).

Training itself goes through the one trainer, :class:`kamado.train.trainer.Trainer`.
"""
