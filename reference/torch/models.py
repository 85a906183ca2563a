"""The zoo's networks written the way PyTorch code usually writes them (NCHW).

Each class is the architecture of ``minicnn.zoo.<name>``: same layers, same parameter
counts, same output. ``forward`` uses the functional style of the articles (``F.relu``,
``F.max_pool2d``, ``torch.flatten``, ``x.view``), so a tracer that only sees ``nn.Module``
objects misses part of the network.

    from reference.torch.models import build
    model = build("lenet5")          # an nn.Module; input (N, 1, 28, 28)
"""
import torch
from torch import nn
from torch.nn import functional as F


class LeNet5(nn.Module):
    """1×28×28 → conv 6@5×5 pad 2 → avg-pool → conv 16@5×5 → avg-pool → 400 → 120 → 84 → 10."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x):
        x = F.avg_pool2d(F.relu(self.conv1(x)), 2)   # (N, 6, 14, 14)
        x = F.avg_pool2d(F.relu(self.conv2(x)), 2)   # (N, 16, 5, 5)
        x = torch.flatten(x, 1)                      # (N, 400)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class MnistCNN(nn.Module):
    """The PyTorch MNIST example: conv 32@3×3 → conv 64@3×3 → max-pool → 9216 → 128 → 10 (log)."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x):
        x = F.relu(self.conv1(x))                    # (N, 32, 26, 26)
        x = F.relu(self.conv2(x))                    # (N, 64, 24, 24)
        x = F.max_pool2d(x, 2)                       # (N, 64, 12, 12)
        x = torch.flatten(x, 1)                      # (N, 9216)
        x = F.relu(self.fc1(x))
        x = self.fc2(x)
        return F.log_softmax(x, dim=1)


class MnistCNNKeras(nn.Module):
    """The Keras article's MNIST net: conv 32@5×5 → max-pool → dropout → 4608 → 128 → softmax."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(1, 32, kernel_size=5)
        self.dropout = nn.Dropout(0.2)
        self.fc1 = nn.Linear(32 * 12 * 12, 128)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv(x)), 2)    # (N, 32, 12, 12)
        x = self.dropout(x)
        x = x.view(x.size(0), -1)                    # (N, 4608)
        x = F.relu(self.fc1(x))
        return F.softmax(self.fc2(x), dim=1)


class RpsCNN(nn.Module):
    """Rock-paper-scissors: two conv blocks (nn.Sequential) → 1568 → 3 logits; input 3×28×28.

    ``image_size=S``: input 3×S×S, and the Linear takes 32·(S//4)² features (64 → 8192).
    """

    def __init__(self, num_classes=3, image_size=28):
        super().__init__()
        self.layer1 = nn.Sequential(
            nn.Conv2d(3, 16, kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool2d(2))
        self.layer2 = nn.Sequential(
            nn.Conv2d(16, 32, kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool2d(2))
        self.fc = nn.Linear(32 * (image_size // 4) ** 2, num_classes)

    def forward(self, x):
        out = self.layer1(x)                         # (N, 16, 14, 14)
        out = self.layer2(out)                       # (N, 32, 7, 7)
        out = out.reshape(out.size(0), -1)           # (N, 1568)
        return self.fc(out)


class ConvNet(nn.Module):
    """The block both articles write: 3×32×32 → conv 64@3×3 → conv 64@3×3 → max-pool."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=3), nn.ReLU(),
            nn.Conv2d(64, 64, kernel_size=3), nn.ReLU(),
            nn.MaxPool2d(2))

    def forward(self, x):
        return self.features(x)                      # (N, 64, 14, 14)


from .resnet import resnet18, resnet50, resnet_small  # noqa: E402  (torchvision's names)

MODELS = {"lenet5": LeNet5, "mnist_cnn": MnistCNN, "mnist_cnn_keras": MnistCNNKeras,
          "rps_cnn": RpsCNN, "convnet": ConvNet,
          "resnet50": resnet50, "resnet18": resnet18, "resnet_small": resnet_small}


def build(name, **kwargs):
    """A fresh nn.Module for a ``minicnn.zoo`` name; ValueError listing the names otherwise."""
    try:
        cls = MODELS[name]
    except KeyError:
        raise ValueError(f"no PyTorch version of {name!r}; there are: "
                         f"{', '.join(MODELS)}") from None
    return cls(**kwargs)
