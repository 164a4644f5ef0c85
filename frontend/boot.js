// Starts the console: loads the wasm bundle (xtask fills in the hashed
// names and writes this file as whetstone-boot-<hash>.js).
import init from "{{JS}}";
// A failed load (old browser, missing file) says so instead of a blank page.
init({ module_or_path: "{{WASM}}" }).catch((e) => {
  const p = document.createElement("p");
  p.id = "boot-error";
  p.textContent = "The console failed to start: " + e;
  document.body.appendChild(p);
});
