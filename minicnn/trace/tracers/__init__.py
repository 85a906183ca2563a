"""One tracer per framework, each running a real forward pass on a dummy input and recording
every layer's call: ``minicnn`` (the layers' own hooks), ``torch`` (module hooks and a
TorchFunctionMode for functional calls), ``keras`` (layer calls, NHWC). torch and Keras are
imported only when their tracer is."""
