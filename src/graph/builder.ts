/**
 * A small builder for ONNX graphs on top of `onnx-proto`'s protobuf types. Graphs are built by code, once per
 * model configuration, and never checked in as bytes. Every value is named by a string; `op` returns the names
 * of its outputs.
 * @module
 */
import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;
const DataType = onnx.TensorProto.DataType;
const AttrType = onnx.AttributeProto.AttributeType;

export type ElemType = 'float' | 'int64' | 'int32' | 'uint8' | 'int8' | 'bool' | 'float16' | 'bfloat16';
/** A dimension: a fixed size, or a name for a size that varies between runs. */
export type Dim = number | string;
export type AttrValue = number | number[] | string | { float: number } | { graph: onnxProto.onnx.IGraphProto };

const ELEM: Record<ElemType, number> = {
  float: DataType.FLOAT, int64: DataType.INT64, int32: DataType.INT32, uint8: DataType.UINT8, int8: DataType.INT8, bool: DataType.BOOL,
  float16: DataType.FLOAT16, bfloat16: DataType.BFLOAT16,
};

/**
 * A large constant handed to ONNX Runtime as external data from memory (`externalData` session option): its
 * bytes never go through the protobuf encoder, and the 2 GB protobuf limit does not apply.
 */
export interface ExternalTensor {
  /** The `location` the graph's TensorProto names; also the key of the session's `externalData` entry. */
  readonly path: string;
  readonly data: Uint8Array;
}

/** A serialized model and the external initializer bytes it refers to. */
export interface BuiltModel {
  readonly bytes: Uint8Array;
  readonly external: readonly ExternalTensor[];
}

const MS_DOMAIN = 'com.microsoft';

export class GraphBuilder {
  private readonly nodes: onnxProto.onnx.INodeProto[] = [];
  private readonly inputs: onnxProto.onnx.IValueInfoProto[] = [];
  private readonly outputs: onnxProto.onnx.IValueInfoProto[] = [];
  private readonly initializers: onnxProto.onnx.ITensorProto[] = [];
  private readonly external: ExternalTensor[] = [];
  /** Inputs a subgraph reads from its parent's scope (a subgraph declares none of its own). */
  private readonly outerInputs = new Map<string, { type: ElemType; dims: readonly Dim[] }>();
  private readonly shared: { counter: number };

  /**
   * @param name graph name
   * @param parent for the branch of an `If` node: value names are drawn from the parent's counter (names must be
   *   unique across scopes), and `input` only records what the branch reads from the parent's scope.
   */
  constructor(readonly name: string, private readonly parent?: GraphBuilder) {
    this.shared = parent ? parent.shared : { counter: 0 };
  }

  private get counter(): number { return this.shared.counter; }
  private set counter(v: number) { this.shared.counter = v; }

  /**
   * Declares a graph input and returns its name. In a subgraph the value comes from the parent's scope: it is
   * recorded (see {@link declareOuterInputs}) rather than declared.
   */
  input(name: string, type: ElemType, dims: readonly Dim[]): string {
    if (this.parent) {
      this.outerInputs.set(name, { type, dims });
      return name;
    }
    this.inputs.push(valueInfo(name, type, dims));
    return name;
  }

  /**
   * Declares as inputs of this graph every input the given subgraphs read from it, once per name; a dimension on
   * which the subgraphs disagree becomes a symbolic one.
   */
  declareOuterInputs(...subgraphs: GraphBuilder[]): void {
    const merged = new Map<string, { type: ElemType; dims: Dim[] }>();
    for (const sub of subgraphs) {
      for (const [name, { type, dims }] of sub.outerInputs) {
        const seen = merged.get(name);
        if (!seen) { merged.set(name, { type, dims: [...dims] }); continue; }
        if (seen.type !== type) throw new Error(`subgraphs disagree on the type of input "${name}"`);
        if (seen.dims.length !== dims.length) throw new Error(`subgraphs disagree on the rank of input "${name}"`);
        seen.dims = seen.dims.map((d, i) => (d === dims[i] ? d : `${name}_dim${i}`));
      }
    }
    for (const [name, { type, dims }] of merged) this.input(name, type, dims);
  }

  /**
   * Declares `value` as a graph output called `name` (through an Identity node when the names differ). `dims`
   * null leaves the shape unstated (the outputs of an `If` whose branches return different shapes).
   */
  output(value: string, name: string, type: ElemType, dims: readonly Dim[] | null): void {
    if (value !== name) this.nodes.push(onnx.NodeProto.create({ opType: 'Identity', input: [value], output: [name] }));
    this.outputs.push(valueInfo(name, type, dims));
  }

  /**
   * A constant tensor from raw little-endian bytes (weights). Tensors of `externalFrom` bytes or more go to ONNX
   * Runtime as external data from memory (see {@link ExternalTensor}); smaller ones are embedded in the model.
   */
  initializer(name: string, type: ElemType, dims: readonly number[], data: ArrayBufferView, externalFrom = 1 << 16): string {
    if (this.parent) throw new Error(`initializer "${name}": add weights to the outermost graph`);
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const numel = dims.reduce((a, d) => a * d, 1);
    const elemBytes = type === 'float' || type === 'int32' ? 4 : type === 'int64' ? 8 : type === 'float16' || type === 'bfloat16' ? 2 : 1;
    if (numel * elemBytes !== bytes.length) throw new Error(`initializer "${name}": ${bytes.length} bytes for dims [${dims}] of ${type}`);
    if (bytes.length < externalFrom) {
      this.initializers.push(onnx.TensorProto.create({ name, dataType: ELEM[type], dims: [...dims], rawData: bytes }));
      return name;
    }
    const path = `${name}.bin`;
    this.external.push({ path, data: bytes });
    this.initializers.push(onnx.TensorProto.create({
      name, dataType: ELEM[type], dims: [...dims],
      dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
      externalData: [
        { key: 'location', value: path }, { key: 'offset', value: '0' }, { key: 'length', value: String(bytes.length) },
      ],
    }));
    return name;
  }

  /** Adds a node with one output and returns the output's name. */
  op(opType: string, inputs: readonly string[], attrs: Record<string, AttrValue> = {}, domain = ''): string {
    return this.opN(opType, inputs, 1, attrs, domain)[0];
  }

  /** Adds a node with `numOutputs` outputs. An empty input name marks an omitted optional input. */
  opN(opType: string, inputs: readonly string[], numOutputs: number, attrs: Record<string, AttrValue> = {}, domain = ''): string[] {
    const outputs = Array.from({ length: numOutputs }, () => `${opType.toLowerCase()}_${this.counter++}`);
    this.nodes.push(onnx.NodeProto.create({
      opType, domain, input: [...inputs], output: outputs, name: outputs[0],
      attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
    }));
    return outputs;
  }

  /** Adds a contrib operator from ONNX Runtime's `com.microsoft` domain. */
  msOpN(opType: string, inputs: readonly string[], numOutputs: number, attrs: Record<string, AttrValue> = {}): string[] {
    return this.opN(opType, inputs, numOutputs, attrs, MS_DOMAIN);
  }

  /** A constant int64 tensor (shapes, axes, split sizes). A scalar when `dims` is []. */
  int64(values: readonly number[], dims: readonly number[] = [values.length]): string {
    const name = `const_${this.counter++}`;
    this.initializers.push(onnx.TensorProto.create({
      name, dataType: DataType.INT64, dims: [...dims], int64Data: values.map((v) => v) as unknown as number[],
    }));
    return name;
  }

  /** A constant float tensor. */
  float(values: readonly number[], dims: readonly number[] = [values.length]): string {
    const name = `const_${this.counter++}`;
    this.initializers.push(onnx.TensorProto.create({ name, dataType: DataType.FLOAT, dims: [...dims], floatData: [...values] }));
    return name;
  }

  /** A constant uint8 scalar (e.g. a quantized tensor's zero point). */
  uint8Scalar(value: number): string {
    const name = `const_${this.counter++}`;
    this.initializers.push(onnx.TensorProto.create({ name, dataType: DataType.UINT8, dims: [], rawData: Uint8Array.of(value) }));
    return name;
  }

  /** The graph as a protobuf object (for an `If` branch: `{ graph: sub.graph() }`). */
  graph(): onnxProto.onnx.IGraphProto {
    return onnx.GraphProto.create({
      name: this.name, node: this.nodes, input: this.inputs, output: this.outputs, initializer: this.initializers,
    });
  }

  /** Serializes the model (ONNX opset 18 plus ONNX Runtime's contrib domain); it must have no external data. */
  build(): Uint8Array {
    const built = this.buildWithExternal();
    if (built.external.length > 0) throw new Error(`graph "${this.name}" has external initializers: use buildWithExternal`);
    return built.bytes;
  }

  /** Serializes the model and returns the external initializers' bytes to hand to the session beside it. */
  buildWithExternal(): BuiltModel {
    if (this.parent) throw new Error(`graph "${this.name}" is a subgraph: serialize its parent`);
    const model = onnx.ModelProto.create({
      irVersion: 8,
      producerName: 'fastkv',
      opsetImport: [{ domain: '', version: 18 }, { domain: MS_DOMAIN, version: 1 }],
      graph: this.graph(),
    });
    return { bytes: onnx.ModelProto.encode(model).finish(), external: [...this.external] };
  }
}

function valueInfo(name: string, type: ElemType, dims: readonly Dim[] | null): onnxProto.onnx.IValueInfoProto {
  const shape = dims === null ? undefined : { dim: dims.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d })) };
  return onnx.ValueInfoProto.create({ name, type: { tensorType: { elemType: ELEM[type], shape } } });
}

function attribute(name: string, v: AttrValue): onnxProto.onnx.IAttributeProto {
  if (typeof v === 'string') return onnx.AttributeProto.create({ name, type: AttrType.STRING, s: new TextEncoder().encode(v) });
  if (Array.isArray(v)) return onnx.AttributeProto.create({ name, type: AttrType.INTS, ints: v });
  if (typeof v === 'object' && 'graph' in v) return onnx.AttributeProto.create({ name, type: AttrType.GRAPH, g: v.graph });
  if (typeof v === 'object') return onnx.AttributeProto.create({ name, type: AttrType.FLOAT, f: v.float });
  return onnx.AttributeProto.create({ name, type: AttrType.INT, i: v });
}
