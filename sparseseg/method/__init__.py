"""The method on arrays and block sources, without file paths: the annotation, the plan of patches and windows, the
3D U-Net and its training, the sliding window, the random forest, the held-out estimate, the decision, and the model
folder that keeps a trained model."""
