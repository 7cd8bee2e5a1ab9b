"""What the demo chain's customers and staff write, in Chinese: complaints of every category
(each with what the staff later find, offer and change), suggestions, praise, and the answers of
return visits. A complaint's text carries its category's keywords, so that intake classifies
one sent without a category the same way (tests/unit/test_demo.py checks it against the bundled
policy)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Complaint:
    category: str
    text: str
    flags: tuple[str, ...] = ()
    service: tuple[str, str] | None = None   # (code, name): the service complained about, by a technician
    product: tuple[str, str] | None = None   # (sku, name): the product complained about, with its batch
    facts: str = ""
    root_cause: str = ""
    responsibility: str = "ours"             # ours | customer_misuse | third_party | unfounded
    # (type, CNY, who proposes: the case's owner, a front desk, or the store manager); an owner's
    # voucher or refund is above a front desk's authority: the store manager approves it
    remedy: tuple[str, float, str] = ("apology", 0, "manager")
    measures: str = ""
    action: str = ""                          # the corrective action when the responsibility is ours


COMPLAINTS = (
    Complaint("service_quality", "昨天下午剪发，发型师没按我给的参考图来，刘海剪短了一大截，两边也剪得不对称，很不专业。",
              service=("HAIRCUT", "洗剪吹"), facts="调阅了当天的服务记录，发型师剪前未与顾客再次确认长度",
              root_cause="剪前沟通不到位，发型师未核对参考图", remedy=("redo_service", 0, "owner"),
              measures="安排资深发型师免费修剪造型，并赠送一次护发", action="组织全店发型师复训剪前沟通确认流程"),
    Complaint("service_quality", "这次烫的卷度和我选的样子完全不一样，发尾还被烫坏了，技术太差。",
              service=("PERM-01", "烫发"), facts="核对了药水用量和停留时间记录，发尾停留时间超出标准",
              root_cause="烫发药水停留时间过长", remedy=("redo_service", 0, "owner"),
              measures="免费做发尾修护并重新烫卷", action="烫发计时器统一使用并由助理复核时间"),
    Complaint("service_quality", "染完的颜色和色卡差很多，发色不对，而且染色不均，后脑勺一块深一块浅。",
              service=("HAIR-DYE", "染发"), facts="查看了配色记录，调色比例与色卡要求不一致",
              root_cause="技师调色比例记录错误", remedy=("redye", 0, "manager"),
              measures="十天内免费重新补染，并由资深技师操作", action="染发调色必须双人核对配方"),
    Complaint("hygiene_environment", "给我用的毛巾有一股异味，看着也不干净，不知道有没有消毒。",
              facts="抽查了当天毛巾消毒登记，午间一批毛巾未登记消毒", root_cause="午间高峰毛巾消毒流程被跳过",
              remedy=("gift", 100, "owner"), measures="当面致歉并赠送护理体验券，毛巾已全部重新消毒",
              action="毛巾消毒每批登记，店长每日抽查"),
    Complaint("hygiene_environment", "洗头区地上全是头发没扫，水池边还有蟑螂，环境差得让人不敢坐。",
              facts="查看监控，晚间清扫时段人手不足，且后厨区域有虫害迹象", root_cause="清扫排班不足，灭虫未按期进行",
              remedy=("voucher", 100, "manager"), measures="已请专业公司灭虫，并赠送代金券致歉",
              action="增加晚班清扫人员，每月固定灭虫"),
    Complaint("hygiene_environment", "美容间里很脏，床单像是上一个客人用过的，卫生太差了。",
              facts="床单更换记录显示上一位客人后未及时更换", root_cause="美容师交接时漏换床单",
              remedy=("discount", 150, "owner"), measures="当面致歉，下次护理享受优惠，美容间已全面清洁",
              action="每位客人后更换床单并在交接单签字"),
    Complaint("product_quality", "在店里买的补水精华用了两周一点改善都没有，感觉就是没效果的三无产品。",
              product=("SK-HY01", "玻尿酸补水精华"), facts="核对了该批次进货单据和质检报告，产品资质齐全",
              root_cause="产品正规，顾客期望与功效宣传不一致", responsibility="unfounded",
              remedy=("apology", 0, "manager"), measures="向顾客说明产品资质和正确用法，提供免费皮肤检测"),
    Complaint("product_quality", "前台推荐的洗发水拿回家发现已经过期了，保质期到上个月。",
              product=("HC-SH01", "氨基酸洗发水"), facts="盘点货架发现同批次仍有两瓶过期商品在售",
              root_cause="临期商品未按规定下架", remedy=("exchange", 98, "manager"),
              measures="为顾客更换新品并赔礼道歉，过期商品已全部下架", action="每周盘点临期商品，提前一个月下架"),
    Complaint("product_quality", "买的口红涂上半天就掉色，和宣传的持久完全不一样，怀疑是假货。",
              product=("CO-LP01", "丝绒雾面口红"), facts="已将同批次样品送供应商检测，外包装防伪码可查",
              root_cause="该批次持妆效果不达标，供应商确认批次问题", responsibility="third_party",
              remedy=("refund", 168, "manager"), measures="全额退款，该批次已退回供应商"),
    Complaint("staff_attitude", "前台接待态度很差，我问了两遍套餐内容她就不耐烦，还翻白眼。",
              facts="调看前台监控，接待员当时语气生硬", root_cause="高峰期接待员情绪管理不当",
              remedy=("gift", 88, "owner"), measures="当面致歉并赠送护发小样，接待员已做检讨",
              action="前台服务礼仪培训，每月神秘顾客抽查"),
    Complaint("staff_attitude", "做护理的时候美容师一直推销会员套餐，我说不需要还被冷嘲热讽，很没礼貌。",
              facts="与当班美容师面谈并核对顾客评价记录", root_cause="美容师为完成业绩过度推销",
              remedy=("discount", 100, "owner"), measures="致歉并承诺不再推销，下次护理给予优惠",
              action="调整业绩考核，禁止护理过程中推销"),
    Complaint("staff_attitude", "技师全程爱答不理，问什么都很冷漠，感觉很不受尊重。",
              facts="询问当班同事，技师当天身体不适但仍坚持上班", root_cause="排班未考虑员工状态，服务沟通不足",
              remedy=("apology", 0, "manager"), measures="店长电话致歉并安排其他技师跟进服务",
              action="员工身体不适可临时调班，店长每日开班前确认状态"),
    Complaint("booking", "提前三天在小程序预约了下午两点，到店后又排队等了一个多小时。",
              facts="核对预约系统，当天下午同一时段超额接单", root_cause="系统未限制同一发型师的重叠预约",
              remedy=("voucher", 50, "owner"), measures="赠送代金券致歉，预约系统已限制重叠时段",
              action="预约系统按发型师限流，前台每天核对次日预约"),
    Complaint("booking", "约好的发型师临时爽约，也没提前通知我改期，白跑一趟。",
              facts="发型师临时请假，前台未按流程通知已预约顾客", root_cause="请假后未通知已预约的顾客",
              remedy=("gift", 120, "owner"), measures="致歉并赠送护理一次，优先安排顾客选定时间",
              action="员工请假须同步前台并逐一电话通知顾客"),
    Complaint("booking", "周末电话一直约不上，好不容易订到时间，到店又说系统里没有我的预约。",
              facts="查询通话和系统记录，电话预约未录入系统", root_cause="电话预约靠手写登记，漏录",
              remedy=("discount", 80, "owner"), measures="当场安排服务并给予优惠，电话预约改为直接录入系统",
              action="取消手写登记，电话预约当场录入并短信确认"),
    Complaint("price", "结账时多收了我80元，说是加了护理费，事先根本没说，属于乱收费。",
              facts="核对收银明细，护理费未在服务前告知顾客", root_cause="加项服务未提前告知价格",
              remedy=("partial_refund", 80, "owner"), measures="退还多收的80元并致歉",
              action="所有加项服务须提前告知价格并由顾客确认"),
    Complaint("price", "价目表上写的洗剪吹68元，结账却收了128元，说是总监价格，太贵了也没提前告知。",
              facts="价目表未标注总监级别价格", root_cause="价目表信息不完整", remedy=("partial_refund", 60, "manager"),
              measures="退还差价，价目表已更新标注各级别价格", action="价目表按发型师级别完整公示"),
    Complaint("price", "充值的时候说好送的项目，现在用的时候又要另外扣费，有隐形消费。",
              facts="查阅充值协议，赠送项目条款写明但未向顾客解释清楚", root_cause="充值时口头承诺与协议不一致",
              remedy=("voucher", 200, "manager"), measures="按口头承诺补送项目并致歉",
              action="充值协议逐条讲解并由顾客签字确认"),
    Complaint("after_sales", "上个月办的疗程卡想退卡，门店一直拖着不给退，售后电话也没人接。",
              facts="核对疗程卡使用记录和合同退款条款", root_cause="退卡申请无人跟进", remedy=("refund", 1200, "manager"),
              measures="按合同扣除已用次数后退还余额", action="退卡申请三个工作日内必须答复"),
    Complaint("after_sales", "买的面霜没拆封想退货，店员说特价商品只能换货不能退款。",
              product=("SK-CR02", "修护面霜"), facts="核对销售记录，未拆封商品符合七天退货条件",
              root_cause="店员对退货政策理解有误", remedy=("refund", 268, "manager"),
              measures="办理退货退款并致歉", action="全员学习退换货政策"),
    Complaint("after_sales", "上次投诉说好给补偿，到现在也没有人联系我，回访也没有。",
              facts="查询上次投诉记录，补偿方案审批后未执行", root_cause="补偿执行无人跟踪",
              remedy=("voucher", 150, "manager"), measures="补发补偿并由店长亲自致歉", action="补偿执行纳入店长周报"),
    Complaint("safety", "染发时头皮一直刺痛，回家后头皮红肿发痒，今天去医院看了说是过敏。",
              flags=("allergy",), service=("HAIR-DYE", "染发"),
              facts="查看服务记录，染发前未做皮肤过敏测试；同批次染膏已封存", root_cause="染发前未按规定做皮试",
              remedy=("refund", 680, "manager"), measures="退还染发费用，承担就医费用并持续跟进恢复情况",
              action="染发前皮试改为必做项目并登记"),
    Complaint("safety", "做离子烫的时候夹板温度太高，耳后被烫伤起了水泡。",
              flags=("burn",), service=("PERM-01", "烫发"), facts="检查夹板温控，温控器失灵",
              root_cause="设备温控故障未及时检修", remedy=("refund", 580, "manager"),
              measures="退还烫发费用并陪同就诊，故障夹板已停用", action="热工具每周检修并登记"),
    Complaint("safety", "修眉时美容师手法太重把眉骨划伤了，当时就出血了。",
              flags=("injury",), service=("FACE-01", "修眉护理"), facts="查看监控，美容师操作时顾客突然转头",
              root_cause="操作前未提醒顾客保持不动", remedy=("gift", 200, "manager"),
              measures="当场处理伤口，赠送护理并致歉", action="修眉等精细操作前统一提醒顾客"),
    Complaint("safety", "做完果酸焕肤以后脸上大面积脱皮发炎，现在还在就医。",
              service=("FACE-01", "果酸焕肤"), facts="核对皮肤检测记录，顾客为敏感肌仍安排了高浓度果酸",
              root_cause="未根据皮肤检测结果调整果酸浓度", remedy=("refund", 1500, "manager"),
              measures="退还项目费用并承担后续治疗费用", action="敏感肌禁止高浓度果酸，项目前必须皮肤检测"),
)

# Appended to a general complaint now and then: a media threat makes it urgent (intake's triage).
MEDIA_THREAT = "再不处理我就发到小红书和大众点评上曝光。"

# The one remedy above a store manager's authority (a regional manager approves it).
LARGE_REMEDY = ("partial_refund", 3600, "manager")

SUGGESTIONS = (
    "建议在等候区增加手机充电插座和免费饮水。",
    "希望小程序能显示每位发型师的空闲时段，方便选时间。",
    "建议会员积分可以兑换头皮护理之类的项目。",
    "洗头的水温希望能先问一下顾客，有时候太烫了。",
    "周末能不能增加早场，九点就开门。",
    "建议做完染发给一张护理说明卡，写清楚几天内不要洗头。",
)

PRAISE = (
    "{tech}做的头皮护理非常专业，力度刚好，下次还找她。",
    "前台小姐姐很热情，帮我把时间改到了合适的时段，点赞！",
    "染的颜色很满意，{tech}很耐心地帮我选色号。",
    "{tech}剪的发型特别适合我，朋友都说好看。",
)

FIRST_RESPONSE = "您好，我是{branch}的{owner}。您反映的问题我们已经收到并高度重视，正在核实情况，会尽快给您答复。"
URGENT_RESPONSE = ("您好，非常抱歉给您带来不适。请先停止使用相关产品，如有需要请及时就医，费用我们会负责核实处理，"
                   "店长稍后会与您电话联系。")
ACKNOWLEDGE = {"suggestion": "感谢您的宝贵建议，我们已转给店长，会认真考虑并给您反馈。",
               "praise": "感谢您的表扬和认可，我们会转达给相关同事，欢迎您再次光临！"}
FOLLOW_UP_PLAN = "三天后回访，了解您的满意度和恢复情况。"
DECISIONS = {"adopted": "已采纳，下月起执行。", "declined": "经评估暂不具备条件，感谢建议。"}

# A case an adverse reaction opened (a return visit found discomfort after a hair colour).
ADVERSE = Complaint(
    "safety", "", facts="封存同批次染膏 {batch} 并送检；其他门店回访也发现同批次染膏的过敏反应，已通知供应商",
    root_cause="染膏批次 {batch} 疑似成分异常", responsibility="third_party",
    remedy=("medical_expense", 860, "manager"),
    measures="承担全部就医费用，停用并下架批次 {batch} 的染膏")
ADVERSE_RESPONSE = "您好，回访中得知您染发后出现过敏反应，非常抱歉。请暂停使用护发产品并及时就医，我们已封存同批次染膏送检。"

DISCOMFORT = "染发后第二天头皮发红发痒，耳后起了小红疹"
VISIT_SUGGESTIONS = ("希望染发前多提醒护理注意事项", "服务很好，下次还来", "等候时间有点长", "希望多一些会员活动",
                     "包装可以简单一点，更环保")
STILL_UNHAPPY = "问题还是没有解决，发尾还是很干，希望店长再跟进一下"

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高梁宋郑谢韩唐冯于董萧程曹袁邓许傅沈曾彭吕"
HONORIFICS = ("女士", "女士", "女士", "小姐", "先生")
