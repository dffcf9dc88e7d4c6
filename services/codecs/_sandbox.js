// The harness every JavaScript codec runs in: one per V8 isolate (services/codecs/javascript.py).
// It runs before the codec is loaded, so what it captures (JSON, Date, ...) is the pristine
// built-ins whatever the codec later does. Each call builds the codec afresh (its source is the
// body of one function, run per uplink), hands it a fresh input, and afterwards removes the
// globals the call created and puts back the ones it replaced: nothing a codec keeps survives
// from one uplink to the next.
(function (G) {
  "use strict";
  // mini-racer declares setTimeout and clearTimeout with `var` (not deletable) over Atomics.
  G.setTimeout = undefined;
  G.clearTimeout = undefined;
  G.__timer_manager = undefined;
  delete G.Atomics;
  delete G.SharedArrayBuffer;
  delete G.WebAssembly;

  var stringify = JSON.stringify;
  var parse = JSON.parse;
  var ownNames = Object.getOwnPropertyNames;
  var hasOwn = Object.prototype.hasOwnProperty;
  var same = Object.is;
  var isArray = Array.isArray;
  var freeze = Object.freeze;
  var RealDate = Date;
  var RealString = String;
  var LINE = /\(eval at [^\n]*?, <anonymous>:(\d+):(\d+)\)/;
  var MAX_OUTPUT = 0;

  var factory = null;
  var variablesJson = "{}";
  var baseline = null;

  var keys = Object.keys;

  function snapshot() {
    var names = ownNames(G);
    var values = {};
    for (var i = 0; i < names.length; i++) {
      values[names[i]] = G[names[i]];
    }
    return { names: names, values: values };
  }

  // After each call: globals the call created are deleted, built-ins it replaced are put back.
  // A created global is enumerable (an implicit global, or a property set on globalThis), so
  // `Object.keys` finds it without listing every built-in; replaced ones are found by identity.
  function restore() {
    var created = keys(G);
    for (var i = 0; i < created.length; i++) {
      var name = created[i];
      if (!hasOwn.call(baseline.values, name)) {
        try {
          delete G[name];
        } catch (e) {
          // not configurable: left as it is
        }
      }
    }
    var names = baseline.names;
    for (var j = 0; j < names.length; j++) {
      var known = names[j];
      if (!same(G[known], baseline.values[known])) {
        try {
          G[known] = baseline.values[known];
        } catch (e) {
          // read-only: the codec could not have changed it either
        }
      }
    }
  }

  function describe(error) {
    var message;
    if (error !== null && typeof error === "object" && "message" in error) {
      message = (error.name ? error.name + ": " : "") + RealString(error.message);
    } else {
      message = RealString(error);
    }
    var line = null;
    var stack = error !== null && typeof error === "object" ? RealString(error.stack) : "";
    var found = LINE.exec(stack);
    if (found) {
      line = Number(found[1]) - 2; // `new Function` puts two lines before the body
    }
    return { e: message, line: line };
  }

  function instance() {
    return factory();
  }

  function functionsOf(codec) {
    var names = [];
    for (var name in codec) {
      if (typeof codec[name] === "function") names.push(name);
    }
    return names;
  }

  function encodeOut(value) {
    var text = stringify(value);
    if (text === undefined) return '{"r":null,"u":1}';
    if (text.length > MAX_OUTPUT) return '{"x":' + text.length + "}";
    return text;
  }

  function decodeOne(raw) {
    var codec = instance();
    var variables = parse(variablesJson);
    var input = {
      bytes: raw.bytes,
      fPort: raw.fPort,
      recvTime: new RealDate(raw.recvTime),
      variables: variables,
    };
    var result;
    if (codec.decodeUplink) {
      result = codec.decodeUplink(input);
    } else if (codec.Decode) {
      result = { data: codec.Decode(raw.fPort, raw.bytes, variables) };
    } else if (codec.Decoder) {
      result = { data: codec.Decoder(raw.bytes, raw.fPort) };
    } else {
      return '{"r":null,"u":1}';
    }
    var out = { r: result === undefined ? null : result };
    if (
      codec.normalizeUplink &&
      result !== null &&
      typeof result === "object" &&
      !isArray(result) &&
      result.data !== null &&
      typeof result.data === "object" &&
      !(isArray(result.errors) && result.errors.length)
    ) {
      var normalized = codec.normalizeUplink({ data: result.data });
      out.n = normalized === undefined ? null : normalized;
    }
    return encodeOut(out);
  }

  function guarded(run, arg) {
    try {
      return run(arg);
    } catch (error) {
      return stringify(describe(error));
    } finally {
      restore();
    }
  }

  function decodeMany(json) {
    var inputs = parse(json);
    var parts = [];
    for (var i = 0; i < inputs.length; i++) {
      parts.push(guarded(decodeOne, inputs[i]));
    }
    return "[" + parts.join(",") + "]";
  }

  function encodeOne(json) {
    var codec = instance();
    if (!codec.encodeDownlink) return '{"r":null,"u":1}';
    var result = codec.encodeDownlink({ data: parse(json) });
    return encodeOut({ r: result === undefined ? null : result });
  }

  function decodeDownlinkOne(json) {
    var codec = instance();
    if (!codec.decodeDownlink) return '{"r":null,"u":1}';
    var raw = parse(json);
    var result = codec.decodeDownlink({ bytes: raw.bytes, fPort: raw.fPort });
    return encodeOut({ r: result === undefined ? null : result });
  }

  var harness = freeze({
    // Loads the codec (a SyntaxError propagates, with its line) and returns the names of its
    // functions as JSON; a codec that throws at its top level throws here.
    load: function (source, variables, maxOutput) {
      factory = new Function(
        source +
          "\n;return {" +
          "decodeUplink: typeof decodeUplink === 'function' ? decodeUplink : undefined," +
          "normalizeUplink: typeof normalizeUplink === 'function' ? normalizeUplink : undefined," +
          "encodeDownlink: typeof encodeDownlink === 'function' ? encodeDownlink : undefined," +
          "decodeDownlink: typeof decodeDownlink === 'function' ? decodeDownlink : undefined," +
          "Decoder: typeof Decoder === 'function' ? Decoder : undefined," +
          "Decode: typeof Decode === 'function' ? Decode : undefined};"
      );
      variablesJson = variables;
      MAX_OUTPUT = maxOutput;
      try {
        return stringify(functionsOf(instance()));
      } finally {
        restore();
      }
    },
    decodeMany: decodeMany,
    encode: function (json) {
      return guarded(encodeOne, json);
    },
    decodeDownlink: function (json) {
      return guarded(decodeDownlinkOne, json);
    },
    restore: function () {
      restore();
    },
  });
  G.__hivepipe = harness;
  baseline = snapshot();
})(globalThis);
