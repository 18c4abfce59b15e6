// The current tab's audio as a MediaStream. Capturing a tab mutes it for the user, so the session
// plays the stream back (LiveSession's `monitor`) to keep it audible.

/** The tab to capture: the active tab of the window this side panel belongs to. */
export async function activeTab(tabs = chrome.tabs) {
  const [tab] = await tabs.query({ active: true, lastFocusedWindow: true });
  if (!tab?.id) throw new Error("there is no tab to capture in this window");
  return tab;
}

export async function captureTab(tabId, api = chrome.tabCapture, media = navigator.mediaDevices) {
  let streamId;
  try {
    streamId = await api.getMediaStreamId({ targetTabId: tabId });
  } catch (error) {
    // Chrome allows it only after the user clicked the extension's button on that tab.
    const reason = String(error?.message || error).replace(/\.$/, "");
    throw new Error(`cannot capture this tab: ${reason}. Click the WhisperLiveKit button on the tab first.`);
  }
  return media.getUserMedia({
    audio: { mandatory: { chromeMediaSource: "tab", chromeMediaSourceId: streamId } },
    video: false,
  });
}

export async function captureCurrentTab() {
  return captureTab((await activeTab()).id);
}
