"""torchvision's ResNet in plain PyTorch (torchvision is not a dependency of this project).

Module and parameter names are torchvision.models.resnet's, so a torchvision ``state_dict``
(pretrained weights included) loads with ``load_state_dict(..., strict=True)``:

    conv1 bn1 relu maxpool  layer1..layer4 (blocks 0, 1, ...)  avgpool fc
    block: conv1 bn1 conv2 bn2 [conv3 bn3] relu [downsample.0 (1×1 conv), downsample.1 (BN)]

It is torchvision's "ResNet v1.5": in a Bottleneck the stride sits on the 3×3 conv (conv2),
not on the first 1×1 as in the original paper and in Keras' ResNet50. Convolutions have no
bias (a BatchNorm follows each one), BatchNorm eps is 1e-5, the stem is conv 7×7 stride 2
padding 3 then max-pool 3×3 stride 2 padding 1.

    from reference.torch.resnet import resnet50
    net = resnet50(num_classes=1000)       # input (N, 3, H, W), H and W >= 32 or so

``width`` (64 in torchvision) scales every stage; ``resnet_small`` uses it for a CPU-sized
network with the same layout.
"""
import torch
from torch import nn


def conv3x3(in_planes, out_planes, stride=1, bias=False):
    """3×3 convolution, padding 1, no bias (torchvision's; ``bias`` for Keras' variant)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=bias)


def conv1x1(in_planes, out_planes, stride=1, bias=False):
    """1×1 convolution, no bias (torchvision's; ``bias`` for Keras' variant)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=bias)


class BasicBlock(nn.Module):
    """Two 3×3 convs (the first with the stride) and a shortcut: resnet18 and resnet34."""
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, bias=False):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride, bias)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, bias=bias)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """1×1 (to ``planes``) → 3×3 (with the stride) → 1×1 (expand ×4), plus a shortcut."""
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, stride_in_1x1=False,
                 bias=False):
        super().__init__()
        # stride_in_1x1: the original paper's and Keras' place for the stride ("v1")
        s1, s2 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(inplanes, planes, s1, bias)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, s2, bias)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion, bias=bias)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """Stem, four stages of ``layers[i]`` blocks (stages 2-4 halve H and W), average, fc.

    (N, in_channels, H, W) -> (N, num_classes) logits.
    """

    def __init__(self, block, layers, num_classes=1000, zero_init_residual=False, width=64,
                 in_channels=3):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 8 * block.expansion, num_classes)

        # torchvision's initialisation; the Linear keeps PyTorch's default
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:  # each block starts as the identity
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.constant_(m.bn3.weight, 0)
                elif isinstance(m, BasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))   # (N, width, H/4, W/4)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)                                     # (N, fc.in_features, H/32, W/32)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


# image_size: accepted as minicnn's zoo and the Keras twins take it; a ResNet runs on any size
# (global average pooling), so nothing here depends on it
def resnet18(num_classes=1000, image_size=None, **kwargs):
    """torchvision.models.resnet18: BasicBlocks [2, 2, 2, 2], 11.7 M parameters at 1000 classes."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, **kwargs)


def resnet50(num_classes=1000, image_size=None, **kwargs):
    """torchvision.models.resnet50: Bottlenecks [3, 4, 6, 3], 25.6 M parameters at 1000 classes."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, **kwargs)


def resnet_small(num_classes=3, width=8, layers=(1, 1, 1, 1), image_size=None, **kwargs):
    """minicnn.zoo.resnet_small: ResNet-50's layout with one Bottleneck per stage and width 8."""
    return ResNet(Bottleneck, list(layers), num_classes, width=width, **kwargs)
