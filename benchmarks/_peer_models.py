"""The residual CNN of ``benchmarks.peers`` written twice: tf_keras and PyTorch, any widths.

Both twins are built from one ``widths`` dict (one entry per channel group, so a pruned
model of either tool has a twin of its shape) and weights move both ways:

- stem: 3x3 conv, stride 2, no padding (28 -> 13), batch norm, ReLU;
- block1: two 3x3 convs (batch norm each), identity shortcut, add, ReLU (13x13);
- block2: 3x3 conv stride 2 and 3x3 conv, 1x1 stride-2 projection, add, ReLU (-> 7x7);
- block3, the depthwise stage: 3x3 depthwise stride 2, 1x1 pointwise, 1x1 stride-2
  projection, add, ReLU (-> 4x4);
- block4: 3x3 depthwise and 1x1 pointwise, identity shortcut, add, ReLU (4x4);
- global average pooling, a Dense / Linear head.

Every stride-2 3x3 convolution sees an odd input (13, 7), where Keras "same" padding is
symmetric (one pixel each side) and equals PyTorch's ``padding=1``; the stem has none.
Keras batch norm's epsilon (1e-3) is given to the PyTorch twin.

Groups (channels that must be removed together): ``stem`` (stem, block1's second conv and
its add), ``b1`` (block1's first conv), ``b2a`` (block2's first conv), ``b2`` (block2's
second conv and projection, block3's depthwise), ``b3`` (block3's pointwise and
projection, block4's depthwise and pointwise).
"""

import numpy as np

__all__ = ["WIDTHS", "keras_model", "torch_model", "keras_to_torch", "torch_to_keras",
           "keras_widths", "torch_widths", "torch_available"]

WIDTHS = {"stem": 16, "b1": 16, "b2a": 32, "b2": 32, "b3": 64}
BN_EPSILON = 1e-3


def keras_model(widths=None, num_classes=10):
    """The tf_keras twin with these group widths (default :data:`WIDTHS`)."""
    from kprune.engines.tfkeras import loader

    w = dict(WIDTHS, **(widths or {}))
    keras = loader.keras
    layers = keras.layers

    def bn(x, name):
        return layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)

    def conv(x, filters, kernel, stride, name, padding="same"):
        x = layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False,
                          name=f"{name}_conv")(x)
        return bn(x, name)

    def depthwise(x, stride, name):
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False,
                                   name=f"{name}_dw")(x)
        return bn(x, f"{name}_dw")

    inputs = keras.Input((28, 28, 1))
    x = layers.ReLU(name="stem_relu")(conv(inputs, w["stem"], 3, 2, "stem", padding="valid"))
    y = layers.ReLU(name="b1_relu1")(conv(x, w["b1"], 3, 1, "b1_1"))
    y = conv(y, w["stem"], 3, 1, "b1_2")
    x = layers.ReLU(name="b1_out")(layers.Add(name="b1_add")([y, x]))
    y = layers.ReLU(name="b2_relu1")(conv(x, w["b2a"], 3, 2, "b2_1"))
    y = conv(y, w["b2"], 3, 1, "b2_2")
    x = layers.ReLU(name="b2_out")(layers.Add(name="b2_add")([y, conv(x, w["b2"], 1, 2,
                                                                        "b2_proj")]))
    y = layers.ReLU(name="b3_relu1")(depthwise(x, 2, "b3"))
    y = conv(y, w["b3"], 1, 1, "b3_pw")
    x = layers.ReLU(name="b3_out")(layers.Add(name="b3_add")([y, conv(x, w["b3"], 1, 2,
                                                                        "b3_proj")]))
    y = layers.ReLU(name="b4_relu1")(depthwise(x, 1, "b4"))
    y = conv(y, w["b3"], 1, 1, "b4_pw")
    x = layers.ReLU(name="b4_out")(layers.Add(name="b4_add")([y, x]))
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(num_classes, name="head")(x)
    return keras.Model(inputs, outputs, name="peers_resnet")


def keras_widths(model):
    """The group widths of a tf_keras twin (e.g. one that kprune pruned)."""
    get = model.get_layer
    return {"stem": get("stem_conv").filters, "b1": get("b1_1_conv").filters,
            "b2a": get("b2_1_conv").filters, "b2": get("b2_2_conv").filters,
            "b3": get("b3_pw_conv").filters}


def torch_available():
    """``(torch module or None, why not)``."""
    try:
        import torch
    except ImportError as err:
        return None, f"torch: {err}"
    return torch, ""


def torch_model(widths=None, num_classes=10):
    """The PyTorch twin with these group widths (NCHW input)."""
    import torch
    from torch import nn

    w = dict(WIDTHS, **(widths or {}))

    def conv_bn(cin, cout, kernel, stride, padding, groups=1):
        return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups,
                                       bias=False),
                             nn.BatchNorm2d(cout, eps=BN_EPSILON))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = conv_bn(1, w["stem"], 3, 2, 0)
            self.b1_1 = conv_bn(w["stem"], w["b1"], 3, 1, 1)
            self.b1_2 = conv_bn(w["b1"], w["stem"], 3, 1, 1)
            self.b2_1 = conv_bn(w["stem"], w["b2a"], 3, 2, 1)
            self.b2_2 = conv_bn(w["b2a"], w["b2"], 3, 1, 1)
            self.b2_proj = conv_bn(w["stem"], w["b2"], 1, 2, 0)
            self.b3_dw = conv_bn(w["b2"], w["b2"], 3, 2, 1, groups=w["b2"])
            self.b3_pw = conv_bn(w["b2"], w["b3"], 1, 1, 0)
            self.b3_proj = conv_bn(w["b2"], w["b3"], 1, 2, 0)
            self.b4_dw = conv_bn(w["b3"], w["b3"], 3, 1, 1, groups=w["b3"])
            self.b4_pw = conv_bn(w["b3"], w["b3"], 1, 1, 0)
            self.head = nn.Linear(w["b3"], num_classes)

        def forward(self, x):
            relu = torch.relu
            x = relu(self.stem(x))
            x = relu(self.b1_2(relu(self.b1_1(x))) + x)
            x = relu(self.b2_2(relu(self.b2_1(x))) + self.b2_proj(x))
            x = relu(self.b3_pw(relu(self.b3_dw(x))) + self.b3_proj(x))
            x = relu(self.b4_pw(relu(self.b4_dw(x))) + x)
            return self.head(x.mean(dim=(2, 3)))

    return Net()


def torch_widths(net):
    """The group widths of a PyTorch twin (e.g. one that Torch-Pruning pruned)."""
    return {"stem": net.stem[0].out_channels, "b1": net.b1_1[0].out_channels,
            "b2a": net.b2_1[0].out_channels, "b2": net.b2_2[0].out_channels,
            "b3": net.b3_pw[0].out_channels}


#: PyTorch module name -> (Keras conv layer, Keras batch norm layer)
_PAIRS = {"stem": ("stem_conv", "stem_bn"), "b1_1": ("b1_1_conv", "b1_1_bn"),
          "b1_2": ("b1_2_conv", "b1_2_bn"), "b2_1": ("b2_1_conv", "b2_1_bn"),
          "b2_2": ("b2_2_conv", "b2_2_bn"), "b2_proj": ("b2_proj_conv", "b2_proj_bn"),
          "b3_dw": ("b3_dw", "b3_dw_bn"), "b3_pw": ("b3_pw_conv", "b3_pw_bn"),
          "b3_proj": ("b3_proj_conv", "b3_proj_bn"), "b4_dw": ("b4_dw", "b4_dw_bn"),
          "b4_pw": ("b4_pw_conv", "b4_pw_bn")}


def keras_to_torch(model, net=None):
    """A PyTorch twin of ``model`` (its widths) holding its weights; returns it (eval mode)."""
    import torch

    net = net if net is not None else torch_model(keras_widths(model))
    with torch.no_grad():
        for name, (conv_name, bn_name) in _PAIRS.items():
            conv, norm = getattr(net, name)
            kernel = model.get_layer(conv_name).get_weights()[0]
            # Conv2D [kh, kw, in, out] -> [out, in, kh, kw]; depthwise [kh, kw, in, 1] -> [in, 1, kh, kw]
            order = (2, 3, 0, 1) if conv_name.endswith("_dw") else (3, 2, 0, 1)
            conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel.transpose(order))))
            gamma, beta, mean, var = model.get_layer(bn_name).get_weights()
            for target, value in ((norm.weight, gamma), (norm.bias, beta),
                                  (norm.running_mean, mean), (norm.running_var, var)):
                target.copy_(torch.from_numpy(np.asarray(value)))
        kernel, bias = model.get_layer("head").get_weights()
        net.head.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel.T)))
        net.head.bias.copy_(torch.from_numpy(bias))
    return net.eval()


def torch_to_keras(net):
    """A tf_keras twin of ``net`` (its widths, e.g. after Torch-Pruning) holding its weights."""
    model = keras_model(torch_widths(net))
    for name, (conv_name, bn_name) in _PAIRS.items():
        conv, norm = getattr(net, name)
        weight = conv.weight.detach().cpu().numpy()
        order = (2, 3, 0, 1) if conv_name.endswith("_dw") else (2, 3, 1, 0)
        model.get_layer(conv_name).set_weights([weight.transpose(order)])
        model.get_layer(bn_name).set_weights(
            [t.detach().cpu().numpy() for t in (norm.weight, norm.bias, norm.running_mean,
                                                 norm.running_var)])
    model.get_layer("head").set_weights([net.head.weight.detach().cpu().numpy().T,
                                         net.head.bias.detach().cpu().numpy()])
    return model


def max_difference(model, net, x):
    """Largest absolute difference of the two twins' outputs (logits) on ``x`` (NHWC)."""
    import torch

    keras_out = np.asarray(model(x, training=False))
    with torch.no_grad():
        torch_out = net.eval()(torch.from_numpy(np.ascontiguousarray(
            np.asarray(x, np.float32).transpose(0, 3, 1, 2)))).numpy()
    return float(np.abs(keras_out - torch_out).max())
