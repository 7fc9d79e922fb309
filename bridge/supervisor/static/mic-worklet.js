// Take-over's microphone tap (takeover.js): an AudioWorklet processor that hands each 128-sample block of the
// microphone to the page, which sends it to the call. Its own output is silence.

class MicTap extends AudioWorkletProcessor {
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel && channel.length) this.port.postMessage(channel.slice(0));
    return true;
  }
}

registerProcessor("callbridge-mic-tap", MicTap);
