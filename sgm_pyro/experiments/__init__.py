"""End-to-end runs: the dSprites demo (the main job) and the paper's experiments."""
