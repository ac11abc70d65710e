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

export type ElemType = 'float' | 'int64' | 'int32';
/** A dimension: a fixed size, or a name for a size that varies between runs. */
export type Dim = number | string;
export type AttrValue = number | number[] | string | { float: number };

const ELEM: Record<ElemType, number> = { float: DataType.FLOAT, int64: DataType.INT64, int32: DataType.INT32 };

const MS_DOMAIN = 'com.microsoft';

export class GraphBuilder {
  private readonly nodes: onnxProto.onnx.INodeProto[] = [];
  private readonly inputs: onnxProto.onnx.IValueInfoProto[] = [];
  private readonly outputs: onnxProto.onnx.IValueInfoProto[] = [];
  private readonly initializers: onnxProto.onnx.ITensorProto[] = [];
  private counter = 0;

  constructor(readonly name: string) {}

  /** Declares a graph input and returns its name. */
  input(name: string, type: ElemType, dims: readonly Dim[]): string {
    this.inputs.push(valueInfo(name, type, dims));
    return name;
  }

  /** Declares `value` as a graph output called `name` (through an Identity node when the names differ). */
  output(value: string, name: string, type: ElemType, dims: readonly Dim[]): void {
    if (value !== name) this.nodes.push(onnx.NodeProto.create({ opType: 'Identity', input: [value], output: [name] }));
    this.outputs.push(valueInfo(name, type, dims));
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

  /** Serializes the model (ONNX opset 18 plus ONNX Runtime's contrib domain). */
  build(): Uint8Array {
    const graph = onnx.GraphProto.create({
      name: this.name, node: this.nodes, input: this.inputs, output: this.outputs, initializer: this.initializers,
    });
    const model = onnx.ModelProto.create({
      irVersion: 8,
      producerName: 'fastkv',
      opsetImport: [{ domain: '', version: 18 }, { domain: MS_DOMAIN, version: 1 }],
      graph,
    });
    return onnx.ModelProto.encode(model).finish();
  }
}

function valueInfo(name: string, type: ElemType, dims: readonly Dim[]): onnxProto.onnx.IValueInfoProto {
  return onnx.ValueInfoProto.create({
    name,
    type: { tensorType: { elemType: ELEM[type], shape: { dim: dims.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d })) } } },
  });
}

function attribute(name: string, v: AttrValue): onnxProto.onnx.IAttributeProto {
  if (typeof v === 'string') return onnx.AttributeProto.create({ name, type: AttrType.STRING, s: new TextEncoder().encode(v) });
  if (Array.isArray(v)) return onnx.AttributeProto.create({ name, type: AttrType.INTS, ints: v });
  if (typeof v === 'object') return onnx.AttributeProto.create({ name, type: AttrType.FLOAT, f: v.float });
  return onnx.AttributeProto.create({ name, type: AttrType.INT, i: v });
}
