"""Which ONNX operators the ONNX parser of each TensorRT release imports: the data of the lint's ``unsupported-op`` rule.

TensorRT 8.2's parser is the base list; each later release adds operators, and no release in this
table removed one. An operator is in a release's list when onnx-tensorrt's ``docs/operators.md`` on
that release's branch marks it ``Y`` (https://github.com/onnx/onnx-tensorrt/blob/<branch>/docs/operators.md).
Through 10.1 each list was checked against the op importers registered on the same branch
(``builtin_op_importers.cpp``, from 10.0 ``onnxOpImporters.cpp``); the two entries where they
disagree follow the importer and say so. Ops missing from every list (``Unique``, ``BitShift``,
``Compress``, the Sequence and String ops, ...) are marked ``N`` on every page.

Any op the parser has no importer for is looked up in the plugin registry by name, so a model that
needs one builds only with a plugin of that name loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

Version = tuple[int, int]

# The domains of standard ONNX operators; a node in any other domain is a custom op (a plugin, or a local function).
DEFAULT_DOMAINS = frozenset({"", "ai.onnx"})
# The parser imports model-local functions (FunctionProto) by inlining them from TensorRT 9.0 (onnx-tensorrt
# docs/Changelog.md, "TensorRT 9.0 EA": "Added support for ONNX local functions").
LOCAL_FUNCTIONS_SINCE: Version = (9, 0)
# Plugins of TensorRT's own plugin library (libnvinfer_plugin) are named "..._TRT" (EfficientNMS_TRT, ROIAlign_TRT).
PLUGIN_LIBRARY_SUFFIX = "_TRT"


@dataclass(frozen=True)
class ParserRelease:
    """The operators a TensorRT release's ONNX parser added over the previous entry, and where that is written."""

    version: Version
    added: frozenset[str]
    source: str


def _ops(names: str) -> frozenset[str]:
    return frozenset(names.split())


_BRANCH = "https://github.com/onnx/onnx-tensorrt/blob/{}/docs/operators.md"
_CHANGELOG = "https://github.com/onnx/onnx-tensorrt/blob/main/docs/Changelog.md"

RELEASES: tuple[ParserRelease, ...] = (
    ParserRelease((8, 2), _ops("""
        Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil Celu Clip
        Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Div Dropout
        Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor GRU Gather GatherElements GatherND Gemm GlobalAveragePool
        GlobalLpPool GlobalMaxPool Greater GreaterOrEqual HardSigmoid Identity If ImageScaler InstanceNormalization IsNaN
        LRN LSTM LeakyRelu Less LessOrEqual Log LogSoftmax Loop LpNormalization LpPool MatMul Max MaxPool Mean Min Mul
        Neg NonMaxSuppression Not Or PRelu Pad ParametricSoftplus Pow QuantizeLinear RNN RandomUniform RandomUniformLike
        Range ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
        ReduceSumSquare Relu Reshape Resize ReverseSequence Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu
        Shape Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh
        ThresholdedRelu Tile TopK Transpose Unsqueeze Upsample Where
        Reciprocal
    """), _BRANCH.format("release/8.2-GA") + " (Reciprocal is marked N there, but release/8.2-GA registers its importer)"),
    ParserRelease((8, 4), _ops("HardSwish Shrink Xor"), _BRANCH.format("release/8.4-GA")),
    # 8.4's page also marks RandomNormal(Like) Y, but 8.4-GA has no importer for them; the 8.5 changelog adds them.
    ParserRelease((8, 5), _ops("GridSample MeanVarianceNormalization Mod NonZero OneHot RandomNormal RandomNormalLike RoiAlign Trilu"),
                  _BRANCH.format("release/8.5-GA")),
    ParserRelease((8, 6), _ops("GroupNormalization IsInf LayerNormalization"), _BRANCH.format("release/8.6-GA")),
    ParserRelease((9, 1), _ops("CastLike"), _BRANCH.format("9.1")),
    ParserRelease((9, 2), _ops("Hardmax"), _BRANCH.format("9.2")),
    ParserRelease((10, 0), _ops("Gelu Mish"), _BRANCH.format("release/10.0-GA")),
    ParserRelease((10, 1), _ops("DeformConv"), _BRANCH.format("release/10.1-GA")),
    ParserRelease((10, 4), _ops("BlackmanWindow HammingWindow HannWindow"), _CHANGELOG + " (10.4 GA)"),
    ParserRelease((10, 5), _ops("STFT"), _CHANGELOG + " (10.5 GA)"),
    ParserRelease((10, 14), _ops("Attention"), _CHANGELOG + " (10.14 GA)"),
    # The 10.15 page (main, "TensorRT 10.15 supports operators in the inclusive range of opset 9 to opset 24") lists
    # exactly the 10.1 list plus the 10.4-10.15 additions above.
    ParserRelease((10, 15), _ops("RMSNormalization RotaryEmbedding TensorScatter"), _CHANGELOG + " (10.15 GA); " + _BRANCH.format("main")),
    # TensorRT 11 release notes (https://github.com/NVIDIA/TensorRT/releases/tag/v11.0, .../v11.2): the parser added
    # Swish in 11.0 and DFT (through a cuFFT plugin) in 11.2; 11.5 (onnx-tensorrt release/11.5-GA) adds opset 25, no op.
    ParserRelease((11, 0), _ops("Swish"), "https://github.com/NVIDIA/TensorRT/releases/tag/v11.0"),
    ParserRelease((11, 2), _ops("DFT"), "https://github.com/NVIDIA/TensorRT/releases/tag/v11.2"),
)


def supported_ops(version: Version) -> frozenset[str]:
    """The default-domain ops TensorRT ``version``'s ONNX parser imports (a version older than 8.2 gets 8.2's list)."""
    base, *later = RELEASES
    return base.added.union(*(release.added for release in later if release.version <= version))


def first_release_with(op: str) -> Version | None:
    """The first TensorRT release whose parser imports ``op``, or None when none in :data:`RELEASES` does."""
    return next((release.version for release in RELEASES if op in release.added), None)
