"""What each command does, from paths to files: densify, train and predict (`workflows`), suggest, preview and eval
(`review`), the plane-count sweep (`sweep`) and the bioimage.io export (`export`), with the pictures they draw."""
