"""Self-supervised training: VICReg, the budget loss, LARS, the three methods and the loop."""
